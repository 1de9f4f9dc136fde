//! Notifications at the end of a run, against a local HTTP server of the
//! test's own: each format's payload, the events filter, a server that
//! answers 500 then 200, one that never answers, and an unset URL
//! variable. The URL (its secret path) never shows in the output, the
//! reports or the journal. The run is the demo, on a config that asks for
//! the notifications.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How the server answers a request, in turn; after the script, 200.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Silence,
}

/// A request the server got: its path and its JSON body.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    body: Value,
}

struct Server {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Server {
    fn start(script: &[Answer]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (g, sc) = (Arc::clone(&got), Arc::clone(&script));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (g, sc) = (Arc::clone(&g), Arc::clone(&sc));
                std::thread::spawn(move || serve(conn, &g, &sc));
            }
        });
        Server { url, got }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, got: &Mutex<Vec<Got>>, script: &Mutex<VecDeque<Answer>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        got.lock().unwrap().push(Got {
            path,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let answer = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Status(200));
        match answer {
            Answer::Silence => {
                std::thread::sleep(Duration::from_secs(30));
                return;
            }
            Answer::Status(code) => {
                let mut w = &conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 {code} X\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
                );
            }
        }
    }
}

/// The demo with `config`, and these environment variables.
fn demo(dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Output {
    let c = dir.join("config.yml");
    std::fs::write(&c, config).expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prepatch"));
    cmd.args(["demo", "--instances", "30", "-q", "-c"])
        .arg(&c)
        .arg("-o")
        .arg(dir.join("reports"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("prepatch runs")
}

const LANDING_ZONES: &str = "aws: {regions: [us-east-1]}
landing_zones:
  - {name: lza, account_id: \"111111111111\", environment: nonprod}
  - {name: lzb, account_id: \"222222222222\", environment: nonprod}
";

fn report_json(dir: &std::path::Path) -> Value {
    let run = std::fs::read_dir(dir.join("reports"))
        .expect("reports")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("report.json").is_file())
        .expect("a run folder");
    serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap()
}

/// Every file under `dir`, as text, for a search.
fn everything(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out
}

#[test]
fn slack_and_json_payloads_and_the_events_filter() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{LANDING_ZONES}notifications:
  - {{name: ops-slack, format: slack, url_env: SLACK_WEBHOOK_URL}}
  - {{name: itsm, format: json, url_env: ITSM_URL, events: [failures, refused]}}
  - {{name: teams-good-news, format: teams, url_env: TEAMS_URL, events: [finished]}}
"
    );
    let slack = format!("{}/services/T000/B000/SECRETslack", server.url);
    let itsm = format!("{}/api/now/SECRETitsm", server.url);
    let teams = format!("{}/webhook/SECRETteams", server.url);
    let out = demo(
        dir.path(),
        &config,
        &[
            ("SLACK_WEBHOOK_URL", &slack),
            ("ITSM_URL", &itsm),
            ("TEAMS_URL", &teams),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the demo's faults: NOT READY\n{stdout}\n{stderr}"
    );
    let got = server.got();
    assert_eq!(
        got.len(),
        2,
        "slack and the JSON endpoint; teams wants only 'finished': {got:?}"
    );
    let slack_body = &got
        .iter()
        .find(|g| g.path.contains("SECRETslack"))
        .expect("slack")
        .body;
    let json_body = &got
        .iter()
        .find(|g| g.path.contains("SECRETitsm"))
        .expect("json")
        .body;
    println!(
        "Slack payload:\n{}",
        serde_json::to_string_pretty(slack_body).unwrap()
    );
    println!(
        "JSON payload:\n{}",
        serde_json::to_string_pretty(json_body).unwrap()
    );
    let text = slack_body["text"].as_str().expect("Slack text");
    let report = report_json(dir.path());
    let run_id = report["run"]["run_id"].as_str().unwrap();
    assert!(text.contains(run_id) && text.contains("failures"), "{text}");
    assert!(
        text.contains("lza:") && text.contains("lzb:"),
        "per landing zone: {text}"
    );
    assert!(
        text.contains("READY") && text.contains("Reports:"),
        "{text}"
    );
    assert_eq!(slack_body["blocks"][0]["type"], "header");
    assert_eq!(json_body["event"], "failures");
    assert_eq!(json_body["run_id"], run_id);
    assert_eq!(json_body["exit_code"], 1);
    assert_eq!(json_body["totals"]["instances"], 30);
    assert!(json_body["failures"]["total"].as_u64().unwrap() > 0);
    // Reported: the summary, report.json, the journal.
    assert!(
        stdout.contains("notified ops-slack (slack): sent (1 attempt)"),
        "{stdout}"
    );
    assert!(stdout.contains("notified itsm (json): sent"), "{stdout}");
    let sent = report["notifications"].as_array().expect("in report.json");
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|n| n["delivered"] == true));
    let timeline = Command::new(env!("CARGO_BIN_EXE_prepatch"))
        .args(["runs", "show", run_id, "-o"])
        .arg(dir.path().join("reports"))
        .output()
        .expect("runs show");
    let timeline = String::from_utf8_lossy(&timeline.stdout);
    assert!(
        timeline.contains("Notify") && timeline.contains("ops-slack"),
        "{timeline}"
    );
    // The URLs' secrets are nowhere: not in the output, reports or journal.
    let all = format!("{stdout}{stderr}{}", everything(dir.path()));
    for secret in ["SECRETslack", "SECRETitsm", "SECRETteams", "/services/T000"] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
}

#[test]
fn a_500_is_tried_again_and_a_silent_server_does_not_fail_the_run() {
    let flaky = Server::start(&[Answer::Status(500)]);
    let silent = Server::start(&[Answer::Silence, Answer::Silence]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{LANDING_ZONES}notifications:
  - {{name: flaky, format: json, url_env: FLAKY_URL}}
  - {{name: silent, format: slack, url_env: SILENT_URL, timeout: 1, attempts: 2}}
"
    );
    let began = Instant::now();
    let out = demo(
        dir.path(),
        &config,
        &[
            ("FLAKY_URL", &format!("{}/hook", flaky.url)),
            ("SILENT_URL", &format!("{}/hook", silent.url)),
        ],
    );
    let took = began.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run's own outcome, not the notification's\n{stdout}"
    );
    assert_eq!(flaky.got().len(), 2, "500, then 200");
    assert_eq!(silent.got().len(), 2, "two attempts");
    assert!(
        stdout.contains("notified flaky (json): sent (2 attempts)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("notified silent (slack): NOT SENT after 2 attempts: no answer within 1 s"),
        "{stdout}"
    );
    let report = report_json(dir.path());
    let silent_row = report["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "silent")
        .cloned()
        .expect("silent in report.json");
    assert_eq!(silent_row["delivered"], false);
    assert!(
        took < Duration::from_secs(20),
        "bounded by the timeouts: {took:?}"
    );
}

#[test]
fn an_unset_url_variable_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{LANDING_ZONES}notifications:\n  - {{format: slack, url_env: SLACK_WEBHOOK_URL}}\n"
    );
    let out = demo(dir.path(), &config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("notifications[0].url_env")
            && stderr.contains("SLACK_WEBHOOK_URL is not set"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let config = format!(
        "{LANDING_ZONES}notifications:\n  - {{format: slack, url_env: \"https://hooks.slack.com/x\"}}\n"
    );
    let out = demo(dir.path(), &config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("never goes in the file"), "{stderr}");
}

/// restore, cleanup and rollback tell their end too: a cleanup whose AWS
/// does not answer ends with failures, and says so.
#[test]
fn a_cleanup_tells_its_end_too() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("config.yml");
    std::fs::write(
        &c,
        format!(
            "{LANDING_ZONES}notifications:\n  - {{name: ops, format: json, url_env: OPS_URL}}\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prepatch"))
        .args(["cleanup", "-l", "lza", "-c"])
        .arg(&c)
        .arg("-o")
        .arg(dir.path().join("reports"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // Nothing listens there: every call fails at once.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("OPS_URL", format!("{}/hook", server.url))
        .stdin(Stdio::null())
        .output()
        .expect("prepatch runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let got = server.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body["command"], "cleanup");
    assert_eq!(got[0].body["outcome"], "failures");
    assert_eq!(got[0].body["exit_code"], 1);
}
