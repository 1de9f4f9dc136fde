//! `rollback`'s reports: `rollback.csv`, `rollback.json`
//! (`schema/rollback.schema.json`), `rollback.html` and `rollback.xml`
//! (`schema/prepatch-rollback-1.xsd`), from its rows.

use std::io::{self, Write};
use std::path::Path;

use minijinja::value::Serde;
use minijinja::{Value, context};

use super::page::{Folder, render, target_errors};
use crate::error::Error;
use crate::model::rollback::{Row, TargetPlan, summary_line};

/// The CSV's columns, in order.
const COLUMNS: [&str; 19] = [
    "landing_zone",
    "account",
    "region",
    "environment",
    "instance_id",
    "name",
    "ami",
    "action",
    "task_id",
    "task_state",
    "task_started_at",
    "task_completed_at",
    "state",
    "status_checks",
    "ssm",
    "verdict",
    "reason",
    "data_snapshots",
    "rollback_id",
];

/// Writes the four files into `dir`. `applied`: tasks were asked for (else
/// this is the plan, or a dry run).
pub fn write(
    dir: &Path,
    run_id: &str,
    rollback_id: &str,
    applied: bool,
    plans: &[TargetPlan],
) -> Result<(), Error> {
    let folder = Folder::open(dir)?;
    let rows: Vec<&Row> = plans.iter().flat_map(|p| &p.rows).collect();
    let summary = summary_line(plans, applied);
    folder.file("rollback.csv", |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(COLUMNS)?;
        for r in &rows {
            let env = r.environment.to_string();
            let snapshots = r.data_snapshots.join(" ");
            // Every cell: values from AWS (names, ids, states, reasons)
            // could be spreadsheet formulas.
            let cells = [
                r.landing_zone.as_str(),
                &r.account,
                &r.region,
                &env,
                &r.instance_id,
                &r.name,
                &r.ami,
                r.action.as_str(),
                &r.task_id,
                &r.task_state,
                &r.task_started_at,
                &r.task_completed_at,
                &r.state,
                &r.status_checks,
                &r.ssm,
                r.verdict.as_str(),
                &r.reason,
                &snapshots,
                rollback_id,
            ];
            csv.write_record(cells.map(super::csv::neutralise).iter().map(|c| c.as_ref()))?;
        }
        csv.flush()
    })?;
    let errors = target_errors(plans.iter().map(|p| (&p.target, p.error.as_ref())));
    let doc = serde_json::json!({
        "schema_version": 1,
        "rollback_id": rollback_id,
        "run_id": run_id,
        "applied": applied,
        "summary": summary,
        "instances": rows,
        "errors": errors,
    });
    folder.json("rollback.json", &doc)?;
    folder.page("rollback.html", html(run_id, rollback_id, &summary, &rows))?;
    folder.file("rollback.xml", |w| {
        xml(run_id, rollback_id, applied, &summary, &rows, w)
    })
}

const TEMPLATE: &str = include_str!("../../templates/rollback.html");
const CSS: &str = include_str!("../../templates/restore.css");

/// `rollback.html`: one self-contained page, no script.
fn html(
    run_id: &str,
    rollback_id: &str,
    summary: &str,
    rows: &[&Row],
) -> Result<String, minijinja::Error> {
    render(
        TEMPLATE,
        CSS,
        context! {
            run_id => run_id,
            rollback_id => rollback_id,
            summary => summary,
            rows => Value::from(Serde(rows)),
        },
    )
}

/// `rollback.xml`: the same rows, values as element text.
fn xml(
    run_id: &str,
    rollback_id: &str,
    applied: bool,
    summary: &str,
    rows: &[&Row],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut w = super::xml_writer::XmlWriter::new(out)?;
    w.open(
        "rollback",
        &[
            ("xmlns", "urn:prepatch:rollback:1"),
            ("run_id", run_id),
            ("rollback_id", rollback_id),
            ("applied", if applied { "true" } else { "false" }),
        ],
    )?;
    w.el("summary", summary)?;
    for r in rows {
        w.open(
            "instance",
            &[
                ("action", r.action.as_str()),
                ("verdict", r.verdict.as_str()),
            ],
        )?;
        w.el("landing_zone", &r.landing_zone)?;
        w.el("account_id", &r.account)?;
        w.el("region", &r.region)?;
        w.el("environment", r.environment.as_ref())?;
        w.el("instance_id", &r.instance_id)?;
        w.el("name", &r.name)?;
        w.el("ami", &r.ami)?;
        w.el("task_id", &r.task_id)?;
        w.el("task_state", &r.task_state)?;
        w.el("task_started_at", &r.task_started_at)?;
        w.el("task_completed_at", &r.task_completed_at)?;
        w.el("state", &r.state)?;
        w.el("status_checks", &r.status_checks)?;
        w.el("ssm", &r.ssm)?;
        w.el("reason", &r.reason)?;
        for s in &r.data_snapshots {
            w.el("data_snapshot", s)?;
        }
        w.close("instance")?;
    }
    w.close("rollback")?;
    w.finish().map(drop)
}
