//! `report.html`: the dashboard an operator opens after a run, offline,
//! from disk. One self-contained file: CSS and JS inline, no fetches.
//!
//! - The page is a minijinja template (`templates/report.html`) with
//!   auto-escaping on: every value from AWS is HTML-escaped.
//! - The instances travel as JSON in `<script type="application/json">`,
//!   with `<`, `>` and `&` written as `\u003c`, `\u003e` and `\u0026`, so
//!   no value can close the element. The page's script renders one page of
//!   rows at a time with `textContent`, never `innerHTML`, so 10,000
//!   instances stay responsive.
//! - A Content-Security-Policy meta tag allows only the file's own inline
//!   script and style, by their SHA-256 hashes, computed here over the
//!   exact text that is embedded.

use std::collections::BTreeSet;
use std::io::{self, Write};

use base64::Engine;
use minijinja::value::Serde;
use minijinja::{Environment, Value, context};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::model::{InstanceReport, Report, Status};

const TEMPLATE: &str = include_str!("../../templates/report.html");
const CSS: &str = include_str!("../../templates/report.css");
const JS: &str = include_str!("../../templates/report.js");

/// Failures listed in the page itself; the table holds them all.
const SHOWN_FAILURES: usize = 50;

/// `'sha256-…'` of a text, as CSP wants it.
pub(super) fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's Content-Security-Policy: nothing but its own script and style.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:; base-uri 'none'; form-action 'none'",
        csp_hash(JS),
        csp_hash(CSS)
    )
}

/// Copies JSON into a `<script>` element safely: no `<`, `>` or `&` at all
/// (inside JSON strings they become `\u003c` and so on; outside strings
/// JSON has none), and no U+2028/U+2029. `json` is whole UTF-8.
fn write_script_safe(json: &[u8], out: &mut impl Write) -> io::Result<()> {
    let mut from = 0;
    let mut i = 0;
    while i < json.len() {
        let escaped: Option<&[u8]> = match json[i] {
            b'<' => Some(b"\\u003c"),
            b'>' => Some(b"\\u003e"),
            b'&' => Some(b"\\u0026"),
            // U+2028 and U+2029 are E2 80 A8 and E2 80 A9.
            0xE2 if json.get(i + 1) == Some(&0x80) => match json.get(i + 2) {
                Some(0xA8) => Some(b"\\u2028"),
                Some(0xA9) => Some(b"\\u2029"),
                _ => None,
            },
            _ => None,
        };
        match escaped {
            Some(e) => {
                out.write_all(&json[from..i])?;
                out.write_all(e)?;
                i += if json[i] == 0xE2 { 3 } else { 1 };
                from = i;
            }
            None => i += 1,
        }
    }
    out.write_all(&json[from..])
}

/// JSON that is safe inside a `<script>` element: no `<`, `>`, `&`, U+2028
/// or U+2029, each written as a `\u` escape.
pub fn script_safe_json(value: &impl Serialize) -> Result<String, serde_json::Error> {
    let json = serde_json::to_vec(value)?;
    let mut out = Vec::with_capacity(json.len() + json.len() / 16);
    write_script_safe(&json, &mut out).map_err(serde_json::Error::io)?;
    // Only ASCII was put in place of whole characters.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// The instances' fields, as the page's table gets them: in the order
/// [`InstanceReport`] declares them, each value as `report.json` has it.
const FIELDS: [&str; 21] = [
    "landing_zone",
    "account_id",
    "region",
    "environment",
    "instance_id",
    "name",
    "state",
    "initial_state",
    "platform",
    "instance_type",
    "private_ip",
    "launch_time",
    "patch_group",
    "environment_tag",
    "auto_scaling_group",
    "tags",
    "ssm",
    "backup",
    "start",
    "validation",
    "status",
];

/// One instance as an array of its [`FIELDS`]' values: the field names
/// travel once, not in every row.
struct Row<'r, 'a>(&'r InstanceReport<'a>);

impl Serialize for Row<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let i = self.0;
        let mut t = s.serialize_tuple(FIELDS.len())?;
        t.serialize_element(i.landing_zone)?;
        t.serialize_element(i.account_id)?;
        t.serialize_element(i.region)?;
        t.serialize_element(i.environment)?;
        t.serialize_element(i.instance_id)?;
        t.serialize_element(&i.name)?;
        t.serialize_element(i.state)?;
        t.serialize_element(i.initial_state)?;
        t.serialize_element(i.platform)?;
        t.serialize_element(i.instance_type)?;
        t.serialize_element(&i.private_ip)?;
        t.serialize_element(&i.launch_time)?;
        t.serialize_element(&i.patch_group)?;
        t.serialize_element(&i.environment_tag)?;
        t.serialize_element(&i.auto_scaling_group)?;
        t.serialize_element(i.tags)?;
        t.serialize_element(&i.ssm)?;
        t.serialize_element(&i.backup)?;
        t.serialize_element(&i.start)?;
        t.serialize_element(&i.validation)?;
        t.serialize_element(&i.status)?;
        t.end()
    }
}

/// Writes the instances as a table, `{"fields": [...], "rows": [[...]]}`,
/// each row made and written in turn.
fn write_rows(report: &Report, out: &mut impl Write) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    serde_json::to_writer(&mut buf, &FIELDS).map_err(io::Error::other)?;
    out.write_all(b"{\"fields\":")?;
    write_script_safe(&buf, out)?;
    out.write_all(b",\"rows\":[")?;
    for (n, i) in report.instances().enumerate() {
        buf.clear();
        if n > 0 {
            buf.push(b',');
        }
        serde_json::to_writer(&mut buf, &Row(&i)).map_err(io::Error::other)?;
        write_script_safe(&buf, out)?;
    }
    out.write_all(b"]}")
}

#[derive(Serialize)]
struct Failure {
    #[serde(rename = "where")]
    place: String,
    name: Option<String>,
    message: String,
}

/// Landing zones and account-regions first, then instances.
fn failures(report: &Report) -> Vec<Failure> {
    let mut out: Vec<Failure> = report
        .errors
        .iter()
        .filter(|e| e.scope != "instance")
        .map(|e| Failure {
            place: match &e.region {
                Some(r) => format!("{}/{r}", e.landing_zone),
                None => e.landing_zone.clone(),
            },
            name: None,
            message: e.message.clone(),
        })
        .collect();
    for i in report.instances() {
        let mut messages: Vec<&str> = match (&i.validation, i.status) {
            (Some(v), Status::NotReady) => v.reasons.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        if i.validation.is_none() {
            messages.extend(i.backup.iter().filter_map(|b| b.error));
            messages.extend(i.start.iter().filter_map(|s| s.error));
        }
        if !messages.is_empty() {
            out.push(Failure {
                place: format!("{} {}", i.landing_zone, i.instance_id),
                name: i.name.map(str::to_owned),
                message: messages.join("; "),
            });
        }
    }
    out
}

#[derive(Serialize)]
struct Refusal {
    #[serde(rename = "where")]
    place: String,
    account_id: String,
    action: String,
    error: String,
}

/// A dry run's permission checks: the refusals, and counts of the rest.
#[derive(Serialize)]
struct Permissions {
    checks: usize,
    /// Account-regions checked.
    targets: usize,
    allowed: usize,
    refused_total: usize,
    /// The first [`SHOWN_FAILURES`] refusals, in target order.
    refused: Vec<Refusal>,
}

fn permissions(report: &Report) -> Permissions {
    let checks = &report.permission_checks;
    let targets: BTreeSet<_> = checks
        .iter()
        .map(|c| (&c.landing_zone, &c.account_id, &c.region))
        .collect();
    let refused: Vec<Refusal> = checks
        .iter()
        .filter(|c| !c.allowed)
        .map(|c| Refusal {
            place: format!("{}/{}", c.landing_zone, c.region),
            account_id: c.account_id.clone(),
            action: c.action.clone(),
            error: c.error.clone().unwrap_or_else(|| "refused".to_owned()),
        })
        .collect();
    Permissions {
        checks: checks.len(),
        targets: targets.len(),
        allowed: checks.len() - refused.len(),
        refused_total: refused.len(),
        refused: refused.into_iter().take(SHOWN_FAILURES).collect(),
    }
}

/// Where the rows go in the rendered page. It cannot come from a value:
/// every value is HTML-escaped, and `<` with it.
const ROWS_MARK: &str = "<!--prepatch:rows-->";

/// Renders the dashboard around [`ROWS_MARK`], in place of the rows.
fn render_frame(report: &Report) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    // Auto-escaping follows the name: `.html` escapes HTML.
    env.add_template("report.html", TEMPLATE)?;
    let mut failures = failures(report);
    let failures_total = failures.len();
    failures.truncate(SHOWN_FAILURES);
    env.get_template("report.html")?.render(context! {
        csp => content_security_policy(),
        css => Value::from_safe_string(CSS.to_owned()),
        js => Value::from_safe_string(JS.to_owned()),
        data => Value::from_safe_string(ROWS_MARK.to_owned()),
        run => Value::from(Serde(&report.run)),
        totals => Value::from(Serde(&report.totals)),
        landing_zones => Value::from(Serde(&report.landing_zones)),
        targets => report.targets.len(),
        failures => Value::from(Serde(&failures)),
        failures_total => failures_total,
        permissions => Value::from(Serde(&permissions(report))),
        perf => Value::from(Serde(&report.performance)),
        audit_total => report.audit_len(),
        // Made here, escaped here (charts::esc): SVG markup, not values.
        timeline_svg => Value::from_safe_string(super::charts::timeline(report)),
        verdicts_svg => Value::from_safe_string(super::charts::verdicts(report)),
        backups_svg => Value::from_safe_string(super::charts::backups(report)),
    })
}

/// Writes the dashboard: the page, with the rows streamed into it.
pub fn write(report: &Report, mut out: impl Write) -> io::Result<()> {
    let page = render_frame(report).map_err(io::Error::other)?;
    let (head, tail) = page
        .split_once(ROWS_MARK)
        .ok_or_else(|| io::Error::other("the dashboard template has no place for the rows"))?;
    out.write_all(head.as_bytes())?;
    write_rows(report, &mut out)?;
    out.write_all(tail.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_cannot_close_the_script_element() {
        let s = script_safe_json(&"</script><!-- & \u{2028}").unwrap();
        assert_eq!(s, r#""\u003c/script\u003e\u003c!-- \u0026 \u2028""#);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "</script><!-- & \u{2028}");
        // Other characters that start with the same byte are left whole.
        let s = script_safe_json(&"\u{2029}€\u{2027}é").unwrap();
        assert_eq!(s, "\"\\u2029€\u{2027}é\"");
    }

    #[test]
    fn csp_names_the_hashes_of_the_embedded_script_and_style() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(csp.contains(&csp_hash(CSS)));
        assert!(!csp.contains("unsafe"));
    }
}
