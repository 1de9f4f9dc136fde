//! `restore`'s reports: `restore.csv`, `restore.json`, `restore.html` (a
//! template, as the dashboard is) and `restore.xml`, from its rows.

use std::io::{self, Write};
use std::path::Path;

use minijinja::value::Serde;
use minijinja::{Value, context};

use super::page::{Folder, render, target_errors};
use crate::error::Error;
use crate::model::restore::{Row, TargetPlan, summary_line};

/// Writes `restore.csv`, `restore.json`, `restore.html` and `restore.xml` into `dir`.
pub fn write(
    dir: &Path,
    run_id: &str,
    restore_id: &str,
    dry_run: bool,
    plans: &[TargetPlan],
) -> Result<(), Error> {
    let folder = Folder::open(dir)?;
    let rows: Vec<&Row> = plans.iter().flat_map(|p| &p.rows).collect();
    let summary = summary_line(plans, dry_run);
    folder.file("restore.csv", |w| {
        let mut csv = csv::Writer::from_writer(w);
        for r in &rows {
            // Every text cell: values from AWS (names, tags, states) could
            // be spreadsheet formulas.
            let n = |v: &str| super::csv::neutralise(v).into_owned();
            let r = Row {
                landing_zone: n(&r.landing_zone),
                account: n(&r.account),
                region: n(&r.region),
                instance_id: n(&r.instance_id),
                name: n(&r.name),
                state_before: n(&r.state_before),
                state_after: n(&r.state_after),
                tag: n(&r.tag),
                reason: n(&r.reason),
                ..(*r).clone()
            };
            csv.serialize(&r).map_err(io::Error::other)?;
        }
        csv.flush()
    })?;
    let errors = target_errors(plans.iter().map(|p| (&p.target, p.error.as_ref())));
    let doc = serde_json::json!({
        "restore_id": restore_id,
        "run_id": run_id,
        "dry_run": dry_run,
        "summary": summary,
        "instances": rows,
        "errors": errors,
    });
    folder.json("restore.json", &doc)?;
    folder.page("restore.html", html(run_id, restore_id, &summary, &rows))?;
    folder.file("restore.xml", |w| {
        xml(run_id, restore_id, dry_run, &summary, &rows, w)
    })
}

const TEMPLATE: &str = include_str!("../../templates/restore.html");
const CSS: &str = include_str!("../../templates/restore.css");

/// `restore.html`: one self-contained page, no script.
fn html(
    run_id: &str,
    restore_id: &str,
    summary: &str,
    rows: &[&Row],
) -> Result<String, minijinja::Error> {
    render(
        TEMPLATE,
        CSS,
        context! {
            run_id => run_id,
            restore_id => restore_id,
            summary => summary,
            rows => Value::from(Serde(rows)),
        },
    )
}

/// `restore.xml`: the same rows, values as element text.
fn xml(
    run_id: &str,
    restore_id: &str,
    dry_run: bool,
    summary: &str,
    rows: &[&Row],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut w = super::xml_writer::XmlWriter::new(out)?;
    w.open(
        "restore",
        &[
            ("xmlns", "urn:prepatch:restore:1"),
            ("run_id", run_id),
            ("restore_id", restore_id),
            ("dry_run", if dry_run { "true" } else { "false" }),
        ],
    )?;
    w.el("summary", summary)?;
    for r in rows {
        w.open("instance", &[("action", r.action.as_str())])?;
        w.el("landing_zone", &r.landing_zone)?;
        w.el("account_id", &r.account)?;
        w.el("region", &r.region)?;
        w.el("instance_id", &r.instance_id)?;
        w.el("name", &r.name)?;
        w.el("state_before", &r.state_before)?;
        w.el("state_after", &r.state_after)?;
        w.el("in_journal", if r.in_journal { "true" } else { "false" })?;
        w.el("tag", &r.tag)?;
        w.el("tag_removed", if r.tag_removed { "true" } else { "false" })?;
        w.el("reason", &r.reason)?;
        w.close("instance")?;
    }
    w.close("restore")?;
    w.finish().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::restore::Action;

    #[test]
    fn the_page_escapes_hostile_values_and_its_csp_names_its_own_style() {
        let row = Row {
            landing_zone: "lz".into(),
            account: "111111111111".into(),
            region: "eu-west-1".into(),
            environment: "nonprod".parse().expect("an environment"),
            instance_id: "i-1".into(),
            name: "<script>alert(1)</script>\u{7}bell".into(),
            action: Action::LeftAlone,
            state_before: "running".into(),
            state_after: "running".into(),
            in_journal: false,
            tag: String::new(),
            tag_removed: false,
            reason: "\"quoted\" & <b>".into(),
        };
        let page = html("run-1", "r-1", "stopped 0", &[&row]).unwrap();
        assert!(
            !page.contains("<script>") && !page.contains("<b>"),
            "{page}"
        );
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;\u{FFFD}bell"),
            "{page}"
        );
        assert!(page.contains("<tr class=\"left-alone\">"), "{page}");
        let style = page
            .split_once("<style>")
            .and_then(|(_, rest)| rest.split_once("</style>"))
            .map(|(css, _)| css)
            .unwrap();
        let hash = super::super::html::csp_hash(style);
        assert!(page.contains(&hash), "{page}");
    }
}
