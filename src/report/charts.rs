//! The dashboard's pictures: inline SVG made when the report is written,
//! no chart library, nothing fetched. Each says what it shows in words
//! too (a title, labels, counts written beside the bars) and tells its
//! series apart by pattern as well as colour, so that it reads in grey,
//! printed, or to a screen reader. Every value comes from the report model
//! the JSON is made from, and each bar carries its numbers as `data-`
//! attributes, so that a test can hold the picture against `report.json`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::model::{Report, Status};

/// The pictures' common width, in SVG units (the page scales them).
const WIDTH: f64 = 760.0;

/// Text escaped for SVG (XML): values from AWS and the config.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The patterns the pictures share: hatched for what went wrong, dotted
/// for what is not done, so that no series is told by colour alone.
fn defs() -> &'static str {
    concat!(
        "<defs>",
        "<pattern id=\"pp-hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">",
        "<rect width=\"6\" height=\"6\" fill=\"#fde8e8\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#b3261e\" stroke-width=\"3\"/></pattern>",
        "<pattern id=\"pp-dots\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\">",
        "<rect width=\"6\" height=\"6\" fill=\"#f2f2f2\"/><circle cx=\"3\" cy=\"3\" r=\"1.2\" fill=\"#555\"/></pattern>",
        "<pattern id=\"pp-lines\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\">",
        "<rect width=\"6\" height=\"6\" fill=\"#e3f2fd\"/><line x1=\"0\" y1=\"3\" x2=\"6\" y2=\"3\" stroke=\"#1565c0\" stroke-width=\"2\"/></pattern>",
        "</defs>"
    )
}

/// Opens an `<svg>` of `height` with its title.
fn open(out: &mut String, id: &str, height: f64, title: &str) {
    let _ = write!(
        out,
        "<svg id=\"{id}\" class=\"chart\" role=\"img\" aria-labelledby=\"{id}-title\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"{id}-title\">{}</title>{}",
        esc(title),
        defs()
    );
}

/// Each phase's fill and the word its legend gives it.
const PHASE_LOOK: [(&str, &str, &str); 4] = [
    ("scanner", "#bdbdbd", "grey: scan"),
    ("ami-backup", "#1565c0", "solid: AMI backup"),
    ("server-start", "url(#pp-lines)", "lines: start"),
    ("validation", "url(#pp-dots)", "dots: validation"),
];

/// Seconds since the epoch of a report time (`2026-12-06T12:14:13Z`).
fn epoch(t: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp() as f64)
}

/// A phase's bar on the timeline: its name, from and to (seconds since
/// the epoch), and its length as the report gives it.
type Span<'a> = (&'a str, f64, f64, f64);

/// Per account-region, its scan, backup, start and validation as bars on
/// one time axis: where the run spent its time, and which account-region
/// was slowest (its total in bold).
pub fn timeline(report: &Report) -> String {
    let lanes: Vec<(String, Vec<Span>)> = report
        .targets
        .iter()
        .map(|t| {
            let spans = t
                .phases
                .iter()
                .filter_map(|p| {
                    Some((
                        p.phase,
                        epoch(&p.started_at)?,
                        epoch(&p.finished_at)?,
                        p.seconds,
                    ))
                })
                .collect();
            (format!("{}/{}", t.landing_zone, t.region), spans)
        })
        .collect();
    let start = lanes
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.1))
        .fold(f64::INFINITY, f64::min);
    let end = lanes
        .iter()
        .flat_map(|(_, s)| s.iter().map(|s| s.2))
        .fold(f64::NEG_INFINITY, f64::max);
    let total = if end > start { end - start } else { 1.0 };
    let busy = |s: &[Span]| -> f64 {
        match (s.first(), s.last()) {
            (Some(a), Some(b)) => b.2 - a.1,
            _ => 0.0,
        }
    };
    let slowest = lanes.iter().map(|(_, s)| busy(s)).fold(0.0_f64, f64::max);
    let row_h = 24.0;
    let height = 64.0 + row_h * lanes.len().max(1) as f64;
    let mut out = String::new();
    open(
        &mut out,
        "chart-timeline",
        height,
        "Each account-region's phases on one time axis",
    );
    let mut legend = String::from("<text x=\"0\" y=\"16\" class=\"legend\">");
    for (n, (_, _, word)) in PHASE_LOOK.iter().enumerate() {
        let _ = write!(
            legend,
            "<tspan{}>{}</tspan>",
            if n == 0 { "" } else { " dx=\"16\"" },
            word
        );
    }
    legend.push_str("<tspan dx=\"16\">bold: the slowest account-region</tspan></text>");
    out.push_str(&legend);
    let (x0, span) = (220.0, WIDTH - 220.0 - 70.0);
    let x = |t: f64| x0 + span * (t - start) / total;
    for (n, (name, spans)) in lanes.iter().enumerate() {
        let y = 30.0 + row_h * n as f64;
        let took = busy(spans);
        let is_slowest = took > 0.0 && (took - slowest).abs() < 0.5;
        let _ = write!(
            out,
            "<g class=\"lane\" data-target=\"{}\" data-phases=\"{}\"{}>",
            esc(name),
            spans.len(),
            if is_slowest {
                " data-slowest=\"true\""
            } else {
                ""
            }
        );
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{:.1}\" class=\"label\">{}</text>",
            y + 14.0,
            esc(name)
        );
        for (phase, from, to, secs) in spans {
            let fill = PHASE_LOOK
                .iter()
                .find(|(p, ..)| p == phase)
                .map_or("#999", |l| l.1);
            let w = (x(*to) - x(*from)).max(1.5);
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" fill=\"{fill}\" stroke=\"#333\" stroke-width=\"0.5\" data-phase=\"{phase}\" data-seconds=\"{secs}\"><title>{phase}: {secs:.1} s</title></rect>",
                x(*from)
            );
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"count{}\">{}</text></g>",
            x0 + span + 6.0,
            y + 14.0,
            if is_slowest { " slowest" } else { "" },
            short(took.round() as i64)
        );
    }
    let base = 34.0 + row_h * lanes.len() as f64;
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\" stroke=\"#333\"/>",
        x0 + span
    );
    for k in 0..=4 {
        let t = total * k as f64 / 4.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
            x0 + span * k as f64 / 4.0,
            base + 16.0,
            short(t.round() as i64)
        );
    }
    out.push_str("</svg>");
    out
}

/// The kind of a NOT READY reason: `ssm`, `status-check`, `backup`...
/// (the text before its first colon).
fn reason_kind(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}

/// READY and NOT READY per landing zone, a bar each, with the NOT READY
/// reasons counted by kind beneath.
pub fn verdicts(report: &Report) -> String {
    let mut reasons: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for i in report.instances() {
        if let (Status::NotReady, Some(v)) = (i.status, &i.validation) {
            let lz = reasons.entry(i.landing_zone).or_default();
            for r in v.reasons.iter() {
                *lz.entry(reason_kind(r).to_owned()).or_insert(0) += 1;
            }
        }
    }
    let rows = report.landing_zones.len().max(1);
    let row_h = 46.0;
    let height = 30.0 + row_h * rows as f64;
    let mut out = String::new();
    open(
        &mut out,
        "chart-verdicts",
        height,
        "READY and NOT READY instances per landing zone",
    );
    let _ = write!(
        out,
        "<text x=\"0\" y=\"16\" class=\"legend\"><tspan>solid: READY</tspan><tspan dx=\"16\">hatched: NOT READY</tspan><tspan dx=\"16\">dotted: not validated</tspan></text>"
    );
    let most = report
        .landing_zones
        .iter()
        .map(|lz| lz.counts.instances)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (x0, span) = (200.0, WIDTH - 200.0 - 190.0);
    for (n, lz) in report.landing_zones.iter().enumerate() {
        let y = 30.0 + row_h * n as f64;
        let c = &lz.counts;
        let w = |k: usize| span * k as f64 / most;
        let (ready, not_ready) = (w(c.ready), w(c.not_ready));
        let other = w(c.instances.saturating_sub(c.ready + c.not_ready));
        let _ = write!(
            out,
            "<g class=\"verdict\" data-landing-zone=\"{}\" data-instances=\"{}\" data-ready=\"{}\" data-not-ready=\"{}\">",
            esc(&lz.name),
            c.instances,
            c.ready,
            c.not_ready
        );
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{:.1}\" class=\"label\">{}</text>",
            y + 15.0,
            esc(&lz.name)
        );
        let _ = write!(
            out,
            "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{ready:.1}\" height=\"20\" fill=\"#2e7d32\"><title>{} READY</title></rect>",
            c.ready
        );
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{not_ready:.1}\" height=\"20\" fill=\"url(#pp-hatch)\" stroke=\"#b3261e\"><title>{} NOT READY</title></rect>",
            x0 + ready,
            c.not_ready
        );
        if other > 0.0 {
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{other:.1}\" height=\"20\" fill=\"url(#pp-dots)\" stroke=\"#555\"><title>not validated</title></rect>",
                x0 + ready + not_ready
            );
        }
        let words = match lz.status.as_str() {
            "failed" => "FAILED: not worked on".to_owned(),
            _ => format!("{} READY, {} NOT READY", c.ready, c.not_ready),
        };
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"count\">{}</text>",
            x0 + ready + not_ready + other + 6.0,
            y + 15.0,
            esc(&words)
        );
        let why: Vec<String> = reasons
            .get(lz.name.as_str())
            .map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect())
            .unwrap_or_default();
        if !why.is_empty() {
            let _ = write!(
                out,
                "<text x=\"{x0:.1}\" y=\"{:.1}\" class=\"reasons\">NOT READY for: {}</text>",
                y + 35.0,
                esc(&why.join(", "))
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// A "nice" bin width, in seconds, for durations up to `max`: about ten
/// bins of 1, 2 or 5 times a power of ten... in minutes past a minute.
fn bin_width(max: i64) -> i64 {
    let steps = [
        5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800,
    ];
    steps.into_iter().find(|s| max / s < 10).unwrap_or(86400)
}

/// `90s`, `2m`, `1h30m`.
fn short(s: i64) -> String {
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 && s % 60 == 0 => format!("{}m", s / 60),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// Each AMI's time from `CreateImage` to `available`, as a histogram;
/// AMIs that failed, and those not done, as bars of their own, patterned.
pub fn backups(report: &Report) -> String {
    let mut durations: Vec<i64> = Vec::new();
    let (mut failed, mut pending, mut untimed) = (0usize, 0usize, 0usize);
    for i in report.instances() {
        let Some(b) = &i.backup else { continue };
        // As the totals count them: an error (CreateImage refused, a
        // timeout) or an AMI that ended failed or unusable.
        if b.error.is_some() || matches!(b.state, Some("failed" | "unusable")) {
            failed += 1;
            continue;
        }
        match (b.state, b.duration_s) {
            (Some("available"), Some(d)) if !b.reused => durations.push(d.max(0)),
            // Seen available without its start or end (an earlier
            // attempt's AMI, the backup not waited on).
            (Some("available"), None) if !b.reused => untimed += 1,
            (Some("pending"), _) => pending += 1,
            _ => {}
        }
    }
    let max = durations.iter().copied().max().unwrap_or(0);
    let width = bin_width(max);
    let bins = (max / width + 1) as usize;
    let mut counts = vec![0usize; bins];
    for d in &durations {
        counts[(*d / width) as usize] += 1;
    }
    let mut bars: Vec<(String, usize, &str, &str)> = counts
        .iter()
        .enumerate()
        .map(|(n, &c)| {
            let from = n as i64 * width;
            (
                format!("{}–{}", short(from), short(from + width)),
                c,
                "#1565c0",
                "available",
            )
        })
        .collect();
    if untimed > 0 {
        bars.push(("time unknown".into(), untimed, "#90caf9", "available"));
    }
    if failed > 0 {
        bars.push(("failed".into(), failed, "url(#pp-hatch)", "failed"));
    }
    if pending > 0 {
        bars.push(("not done".into(), pending, "url(#pp-dots)", "pending"));
    }
    let height = 250.0;
    let mut out = String::new();
    open(
        &mut out,
        "chart-backups",
        height,
        "Time from CreateImage to available, per AMI",
    );
    let _ = write!(
        out,
        "<text x=\"0\" y=\"16\" class=\"legend\"><tspan>{} AMIs available</tspan><tspan dx=\"16\">hatched: failed ({failed})</tspan><tspan dx=\"16\">dotted: not done ({pending})</tspan></text>",
        durations.len() + untimed
    );
    let most = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let (top, base) = (40.0, 200.0);
    let slot = (WIDTH - 20.0) / bars.len().max(1) as f64;
    let bar_w = (slot * 0.7).min(60.0);
    for (n, (label, count, fill, kind)) in bars.iter().enumerate() {
        let h = (base - top) * *count as f64 / most;
        let x = 10.0 + slot * n as f64 + (slot - bar_w) / 2.0;
        let _ = write!(
            out,
            "<g class=\"bin\" data-kind=\"{kind}\" data-count=\"{count}\"><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" fill=\"{fill}\" stroke=\"#333\"><title>{}: {count}</title></rect>",
            base - h,
            esc(label)
        );
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"count\" text-anchor=\"middle\">{count}</text>",
            x + bar_w / 2.0,
            base - h - 4.0
        );
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">{}</text></g>",
            x + bar_w / 2.0,
            base + 16.0,
            esc(label)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"10\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\" stroke=\"#333\"/>",
        WIDTH - 10.0
    );
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">time to available (bins of {})</text>",
        WIDTH / 2.0,
        base + 38.0,
        short(width)
    );
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_few_and_round() {
        assert_eq!(bin_width(40), 5);
        assert_eq!(bin_width(1100), 120);
        assert_eq!(bin_width(5000), 600);
        assert_eq!(short(90), "1m30s");
        assert_eq!(short(5400), "1h30m");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href='x'>&\u{7}"),
            "&lt;a href=&#39;x&#39;&gt;&amp;\u{FFFD}"
        );
    }
}
