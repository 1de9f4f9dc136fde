//! Notifications: the end of a run told to a chat (Slack, Teams incoming
//! webhooks) or to any endpoint that takes the run's summary as JSON (a
//! ServiceNow, Jira or in-house ITSM URL). Each is sent once, with a
//! timeout per attempt and a few attempts with backoff; a notification
//! that cannot be delivered never fails the run: its outcome is reported.
//! The URL (from the environment variable the config names) appears in no
//! log, report or journal line.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{Notification, NotifyEvent, NotifyFormat};

/// What a notification says: the run, how it ended, what failed, where
/// the reports are; and the machine summary for the JSON format.
#[derive(Clone, Debug)]
pub struct Message {
    pub run_id: String,
    pub event: NotifyEvent,
    /// One line: `3 landing zones: 289 READY, 11 NOT READY`.
    pub headline: String,
    /// Per landing zone: `demo-app-nonprod: 95 READY, 5 NOT READY`.
    pub landing_zones: Vec<String>,
    /// The first few failures, with their reasons.
    pub failures: Vec<String>,
    pub failures_total: usize,
    pub reports: String,
    /// `--summary json`'s document (with `event` added), for the JSON format.
    pub summary: serde_json::Value,
}

/// How one notification went: the model's record of it.
pub type Sent = crate::model::run::Notified;

/// The body a format sends.
pub fn payload(format: NotifyFormat, m: &Message) -> serde_json::Value {
    let mark = match m.event {
        NotifyEvent::Finished => "✅",
        NotifyEvent::Failures => "⚠️",
        NotifyEvent::Refused => "⛔",
        NotifyEvent::Interrupted => "⏹",
    };
    let title = format!("{mark} prepatch run {}: {}", m.run_id, m.event.name());
    let mut lines = vec![m.headline.clone()];
    lines.extend(m.landing_zones.iter().map(|l| format!("• {l}")));
    if !m.failures.is_empty() {
        lines.push(format!("Failures ({}):", m.failures_total));
        lines.extend(m.failures.iter().map(|f| format!("• {f}")));
        if m.failures_total > m.failures.len() {
            lines.push(format!(
                "… and {} more in the reports",
                m.failures_total - m.failures.len()
            ));
        }
    }
    lines.push(format!("Reports: {}", m.reports));
    match format {
        // Slack reads `text` and the section as mrkdwn: a value holding
        // `<!channel>` or `<https://x|click>` would notify the channel or
        // show a link; escaped, it is shown as written ("Formatting text
        // for app surfaces", Escaping text: &, <, >).
        NotifyFormat::Slack => {
            let body = slack_escape(&lines.join("\n"));
            serde_json::json!({
                "text": format!("{}\n{body}", slack_escape(&title)),
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": title}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": body}},
                ],
            })
        }
        // A TextBlock reads Markdown (links among it); a RichTextBlock's
        // TextRun is plain text (Adaptive Cards, "Text features"): every
        // line that holds values is one.
        NotifyFormat::Teams => serde_json::json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": std::iter::once(serde_json::json!({
                        "type": "TextBlock", "size": "Medium", "weight": "Bolder",
                        "text": title, "wrap": true,
                    }))
                    .chain(lines.iter().map(|l| serde_json::json!({
                        "type": "RichTextBlock",
                        "inlines": [{"type": "TextRun", "text": l}],
                    })))
                    .collect::<Vec<_>>(),
                },
            }],
        }),
        NotifyFormat::Json => {
            let mut doc = m.summary.clone();
            if let Some(o) = doc.as_object_mut() {
                o.insert("event".into(), m.event.name().into());
                o.insert(
                    "failures".into(),
                    serde_json::json!({"total": m.failures_total, "first": m.failures}),
                );
            }
            doc
        }
    }
}

/// Text for Slack's mrkdwn, shown as written: `&`, `<` and `>` are the
/// characters Slack parses links, mentions and commands from.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Sends `message` to every target that wants its event, all at once.
/// Never fails: each outcome says whether it was delivered.
///
/// On a runtime of its own, on a blocking thread: the demo's clock is
/// paused (simulated hours pass in moments), and a webhook's timeout and
/// backoff must be real seconds.
pub async fn send_all(targets: &[Notification], message: &Message) -> Vec<Sent> {
    let wanted: Vec<Notification> = targets
        .iter()
        .filter(|t| t.events.contains(&message.event))
        .cloned()
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let m = message.clone();
    let sent = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match rt {
            Ok(rt) => rt.block_on(send_now(&wanted, &m)),
            Err(e) => wanted
                .iter()
                .map(|t| not_sent(t, m.event, 0, format!("cannot start a runtime: {e}")))
                .collect(),
        }
    })
    .await;
    sent.unwrap_or_default()
}

/// [`send_all`]'s work, on real time.
async fn send_now(wanted: &[Notification], message: &Message) -> Vec<Sent> {
    let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b.https_or_http().enable_http1().build(),
        Err(e) => {
            return wanted
                .iter()
                .map(|t| {
                    not_sent(
                        t,
                        message.event,
                        0,
                        format!("no TLS root certificates: {e}"),
                    )
                })
                .collect();
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let sends = wanted.iter().map(|t| send(&client, t, message));
    futures::future::join_all(sends).await
}

fn not_sent(t: &Notification, event: NotifyEvent, attempts: u32, error: String) -> Sent {
    Sent {
        name: t.name.clone(),
        format: t.format.name().to_owned(),
        event: event.name().to_owned(),
        delivered: false,
        attempts,
        error: Some(error),
    }
}

/// One target: up to `attempts` tries, each within `timeout`, 1 s then
/// 2 s, 4 s... between them. A 4xx other than 429 is not tried again: the
/// same body would be refused the same way.
async fn send<C>(client: &Client<C, Full<Bytes>>, t: &Notification, m: &Message) -> Sent
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let body = serde_json::to_vec(&payload(t.format, m)).unwrap_or_default();
    let mut last = String::new();
    for attempt in 1..=t.attempts {
        if attempt > 1 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 2).min(5))).await;
        }
        let request = hyper::Request::post(t.url.expose())
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("prepatch/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.clone())));
        let request = match request {
            Ok(r) => r,
            Err(_) => {
                return not_sent(
                    t,
                    m.event,
                    attempt,
                    format!("{} does not hold a usable URL", t.url_env),
                );
            }
        };
        let answer = tokio::time::timeout(t.timeout, async {
            let response = client.request(request).await?;
            let status = response.status();
            // Read the body, so that the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        })
        .await;
        match answer {
            Ok(Ok(status)) if status.is_success() => {
                tracing::info!(notification = %t.name, attempt, "notification sent");
                return Sent {
                    name: t.name.clone(),
                    format: t.format.name().to_owned(),
                    event: m.event.name().to_owned(),
                    delivered: true,
                    attempts: attempt,
                    error: None,
                };
            }
            Ok(Ok(status)) => {
                last = format!("HTTP {}", status.as_u16());
                if status.is_client_error() && status.as_u16() != 429 {
                    return not_sent(t, m.event, attempt, last);
                }
            }
            // hyper's error names the host at most, never the path (where
            // a webhook's secret is).
            Ok(Err(e)) => last = format!("no answer: {}", error_kind(&e)),
            Err(_) => last = format!("no answer within {} s", t.timeout.as_secs()),
        }
        tracing::warn!(notification = %t.name, attempt, error = %last, "notification not delivered; will try again");
    }
    not_sent(t, m.event, t.attempts, last)
}

/// A client error in words, without the URL.
fn error_kind(e: &hyper_util::client::legacy::Error) -> &'static str {
    if e.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            run_id: "20261206T120000Z-abcd".into(),
            event: NotifyEvent::Failures,
            headline: "2 landing zones: 9 READY, 1 NOT READY".into(),
            landing_zones: vec![
                "a: 5 READY, 0 NOT READY".into(),
                "b: 4 READY, 1 NOT READY".into(),
            ],
            failures: vec!["b i-1: ssm: ConnectionLost".into()],
            failures_total: 1,
            reports: "reports/20261206T120000Z-abcd".into(),
            summary: serde_json::json!({"run_id": "20261206T120000Z-abcd", "outcome": "failures"}),
        }
    }

    #[test]
    fn each_format_says_the_run_the_counts_the_failures_and_the_reports() {
        for format in [NotifyFormat::Slack, NotifyFormat::Teams, NotifyFormat::Json] {
            let text = payload(format, &message()).to_string();
            for needed in ["20261206T120000Z-abcd", "ConnectionLost", "failures"] {
                assert!(text.contains(needed), "{format:?} lacks {needed}: {text}");
            }
        }
        let slack = payload(NotifyFormat::Slack, &message());
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .contains("9 READY, 1 NOT READY")
        );
        let teams = payload(NotifyFormat::Teams, &message());
        assert_eq!(teams["attachments"][0]["content"]["type"], "AdaptiveCard");
        let json = payload(NotifyFormat::Json, &message());
        assert_eq!(json["event"], "failures");
        assert_eq!(json["outcome"], "failures");
    }

    #[test]
    fn values_cannot_mention_link_or_format_in_a_chat() {
        let mut m = message();
        m.failures = vec![
            "b i-1 <!channel> <https://evil.example|click here> [click](https://evil.example) & more"
                .into(),
        ];
        let slack = payload(NotifyFormat::Slack, &m);
        println!("{}", serde_json::to_string_pretty(&slack).unwrap());
        for text in [
            slack["text"].as_str().unwrap(),
            slack["blocks"][1]["text"]["text"].as_str().unwrap(),
        ] {
            assert!(!text.contains('<') && !text.contains('>'), "{text}");
            assert!(
                text.contains("&lt;!channel&gt; &lt;https://evil.example|click here&gt;"),
                "{text}"
            );
            assert!(text.contains("&amp; more"), "{text}");
        }
        let teams = payload(NotifyFormat::Teams, &m);
        let body = teams["attachments"][0]["content"]["body"]
            .as_array()
            .unwrap();
        let markdown: Vec<&serde_json::Value> =
            body.iter().filter(|b| b["type"] == "TextBlock").collect();
        assert_eq!(markdown.len(), 1, "the title only: {body:?}");
        let run = body
            .iter()
            .find(|b| b.to_string().contains("evil.example"))
            .unwrap();
        assert_eq!(run["type"], "RichTextBlock");
        assert_eq!(run["inlines"][0]["type"], "TextRun");
    }
}
