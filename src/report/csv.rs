//! `inventory.csv`: one row per instance, every phase's result.
//!
//! Cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
//! carriage return first) are prefixed with `'`, so a hostile tag value is
//! shown, never evaluated. Columns are listed in [`COLUMNS`] and the README.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::model::{Record, tag};
use crate::workflow::Run;

pub const COLUMNS: [&str; 29] = [
    "landing_zone",
    "account_id",
    "region",
    "environment",
    "instance_id",
    "name",
    "state",
    "platform",
    "instance_type",
    "private_ip",
    "launch_time",
    "patch_group",
    "environment_tag",
    "ssm_ping_status",
    "ssm_agent_version",
    "ami_id",
    "backup_state",
    "backup_created_at",
    "backup_completed_at",
    "backup_duration_s",
    "backup_expires_at",
    "backup_error",
    "initial_state",
    "started_by_run",
    "start_error",
    "verdict",
    "reasons",
    "simulated",
    "tags",
];

/// Makes a cell safe to open in a spreadsheet.
pub fn neutralise(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn row(r: &Record, simulated: bool) -> Vec<String> {
    let i = &r.instance;
    let b = r.backup.as_ref();
    let s = r.start.as_ref();
    let v = r.verdict.as_ref();
    let patch_group = i.tag(tag::PATCH_GROUP).or_else(|| i.tag("PatchGroup"));
    let tags = serde_json::to_string(&i.tags).unwrap_or_default();
    vec![
        r.landing_zone.clone(),
        r.account.to_string(),
        r.region.to_string(),
        r.environment.to_string(),
        i.id.to_string(),
        i.name().unwrap_or_default().to_owned(),
        r.current_state().to_string(),
        i.platform.to_string(),
        i.instance_type.clone(),
        i.private_ip.clone().unwrap_or_default(),
        time(i.launch_time),
        patch_group.unwrap_or_default().to_owned(),
        i.tag(tag::ENVIRONMENT).unwrap_or_default().to_owned(),
        r.ssm.ping.to_string(),
        r.ssm.agent_version.clone().unwrap_or_default(),
        b.and_then(|b| b.ami.as_ref())
            .map(ToString::to_string)
            .unwrap_or_default(),
        b.and_then(|b| b.state)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        time(b.and_then(|b| b.created_at)),
        time(b.and_then(|b| b.completed_at)),
        b.and_then(|b| b.duration_secs())
            .map(|d| d.to_string())
            .unwrap_or_default(),
        time(b.and_then(|b| b.expires_at)),
        b.and_then(|b| b.error.clone()).unwrap_or_default(),
        i.state.to_string(),
        s.is_some_and(|s| s.started_by_run).to_string(),
        s.and_then(|s| s.error.clone()).unwrap_or_default(),
        v.map(|v| v.label().to_owned()).unwrap_or_default(),
        v.map(|v| v.reasons.join("; ")).unwrap_or_default(),
        simulated.to_string(),
        tags,
    ]
}

/// Writes every instance of the run, in (landing zone, region, id) order.
pub fn write(run: &Run, out: impl Write) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    let mut records: Vec<&Record> = run.records().collect();
    records.sort_by(|a, b| {
        (&a.landing_zone, &a.region, &a.instance.id).cmp(&(
            &b.landing_zone,
            &b.region,
            &b.instance.id,
        ))
    });
    for r in records {
        w.write_record(row(r, run.simulated).iter().map(|c| neutralise(c)))?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(neutralise("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(neutralise("+1"), "'+1");
        assert_eq!(neutralise("-2"), "'-2");
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("web-01"), "web-01");
    }
}
