//! `inventory.csv`: one row per instance, every phase's result.
//!
//! Cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
//! carriage return first) are prefixed with `'`, so a hostile tag value is
//! shown, never evaluated. Columns are listed in [`COLUMNS`] and the README.

use std::io::Write;

use super::model::{InstanceReport, Report, instance_report, sorted_records};
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

fn row(i: &InstanceReport, simulated: bool) -> [String; 29] {
    let b = i.backup.as_ref();
    let s = i.start.as_ref();
    let v = i.validation.as_ref();
    let text = |o: Option<&String>| o.cloned().unwrap_or_default();
    [
        i.landing_zone.clone(),
        i.account_id.clone(),
        i.region.clone(),
        i.environment.clone(),
        i.instance_id.clone(),
        text(i.name.as_ref()),
        i.state.clone(),
        i.platform.clone(),
        i.instance_type.clone(),
        text(i.private_ip.as_ref()),
        text(i.launch_time.as_ref()),
        text(i.patch_group.as_ref()),
        text(i.environment_tag.as_ref()),
        i.ssm.ping_status.clone(),
        text(i.ssm.agent_version.as_ref()),
        text(b.and_then(|b| b.ami_id.as_ref())),
        text(b.and_then(|b| b.state.as_ref())),
        text(b.and_then(|b| b.created_at.as_ref())),
        text(b.and_then(|b| b.completed_at.as_ref())),
        b.and_then(|b| b.duration_s)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        text(b.and_then(|b| b.expires_at.as_ref())),
        text(b.and_then(|b| b.error.as_ref())),
        i.initial_state.clone(),
        s.is_some_and(|s| s.started_by_run).to_string(),
        text(s.and_then(|s| s.error.as_ref())),
        text(v.map(|v| &v.verdict)),
        v.map(|v| v.reasons.join("; ")).unwrap_or_default(),
        simulated.to_string(),
        serde_json::to_string(&i.tags).unwrap_or_default(),
    ]
}

/// Writes one row per instance, one row's model at a time, so a large
/// fleet's inventory costs no second copy of the run.
fn write_rows(
    rows: impl Iterator<Item = InstanceReport>,
    simulated: bool,
    out: impl Write,
) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    for i in rows {
        w.write_record(row(&i, simulated).iter().map(|c| neutralise(c)))?;
    }
    w.flush()?;
    Ok(())
}

/// Writes every instance of a run in progress (the checkpoint after each
/// phase), in (landing zone, region, id) order.
pub fn write(run: &Run, out: impl Write) -> csv::Result<()> {
    write_rows(sorted_records(run).map(instance_report), run.simulated, out)
}

/// Writes the instances of a finished run's report.
pub fn write_report(report: &Report, out: impl Write) -> csv::Result<()> {
    write_rows(report.instances(), report.run.simulated, out)
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
