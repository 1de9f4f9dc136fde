//! `inventory.csv`: one row per instance, every phase's result.
//!
//! Cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
//! carriage return first) are prefixed with `'`, so a hostile tag value is
//! shown, never evaluated. Columns are listed in [`COLUMNS`] and the README.

use std::borrow::Cow;
use std::io::Write;

use super::model::{InstanceReport, Report, instance_report, sorted_records};
use crate::model::Run;

pub const COLUMNS: [&str; 30] = [
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
    "auto_scaling_group",
];

/// Makes a cell safe to open in a spreadsheet.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

fn row<'a>(i: &'a InstanceReport<'_>, simulated: bool) -> [Cow<'a, str>; 30] {
    let b = i.backup.as_ref();
    let s = i.start.as_ref();
    let v = i.validation.as_ref();
    fn text(o: Option<&str>) -> Cow<'_, str> {
        Cow::Borrowed(o.unwrap_or(""))
    }
    let flag = |f: bool| Cow::Borrowed(if f { "true" } else { "false" });
    [
        Cow::Borrowed(i.landing_zone),
        Cow::Borrowed(i.account_id),
        Cow::Borrowed(i.region),
        Cow::Borrowed(i.environment),
        Cow::Borrowed(i.instance_id),
        text(i.name),
        Cow::Borrowed(i.state),
        Cow::Borrowed(i.platform),
        Cow::Borrowed(i.instance_type),
        text(i.private_ip),
        text(i.launch_time.as_deref()),
        text(i.patch_group),
        text(i.environment_tag),
        Cow::Borrowed(i.ssm.ping_status),
        text(i.ssm.agent_version),
        text(b.and_then(|b| b.ami_id)),
        text(b.and_then(|b| b.state)),
        text(b.and_then(|b| b.created_at.as_deref())),
        text(b.and_then(|b| b.completed_at.as_deref())),
        b.and_then(|b| b.duration_s)
            .map_or(Cow::Borrowed(""), |d| Cow::Owned(d.to_string())),
        text(b.and_then(|b| b.expires_at.as_deref())),
        text(b.and_then(|b| b.error)),
        Cow::Borrowed(i.initial_state),
        flag(s.is_some_and(|s| s.started_by_run)),
        text(s.and_then(|s| s.error)),
        text(v.map(|v| v.verdict)),
        v.map_or(Cow::Borrowed(""), |v| Cow::Owned(v.reasons.join("; "))),
        flag(simulated),
        Cow::Owned(serde_json::to_string(i.tags).unwrap_or_default()),
        text(i.auto_scaling_group),
    ]
}

/// Writes one row per instance, one row's model at a time, so a large
/// fleet's inventory costs no second copy of the run.
fn write_rows<'a>(
    rows: impl Iterator<Item = InstanceReport<'a>>,
    simulated: bool,
    out: impl Write,
) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    for i in rows {
        for cell in row(&i, simulated) {
            w.write_field(neutralise(&cell).as_bytes())?;
        }
        // An empty record ends the one written field by field.
        w.write_record(std::iter::empty::<&[u8]>())?;
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
