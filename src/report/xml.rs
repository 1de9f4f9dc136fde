//! `report.xml`: the [`Report`] for enterprise and compliance systems, in
//! the namespace [`NAMESPACE`], described by `schema/prepatch-report-1.xsd`
//! (which the document names in `xsi:schemaLocation`). Its `<audit>`
//! element lists every change prepatch made, with time, actor and result;
//! in a dry run, `<permission_checks>` holds EC2's `DryRun` answers.
//!
//! Written with [`XmlWriter`], which escapes every text and attribute.
//! Values from AWS (tags, names, messages) are element text, never
//! attributes, so newlines survive; a carriage return is written as the
//! character reference `&#13;` so that parsers keep it too. Characters that
//! XML 1.0 cannot carry at all (C0 controls other than tab, newline and
//! carriage return; U+FFFE, U+FFFF) are replaced by U+FFFD.

use crate::model::TagMap;
use std::io::{self, Write};

use super::model::{ApiCallStat, Counts, Performance, Report, RunInfo};
use super::xml_writer::XmlWriter;

/// The XML namespace of version 1 of the report.
pub const NAMESPACE: &str = "urn:prepatch:report:1";
/// Where the schema lives in the repository.
pub const SCHEMA_PATH: &str = "schema/prepatch-report-1.xsd";
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

fn tags(x: &mut XmlWriter<impl Write>, tags: &TagMap) -> io::Result<()> {
    x.open("tags", &[])?;
    for (k, v) in tags.iter() {
        x.open("tag", &[])?;
        x.el("key", k)?;
        x.el("value", v)?;
        x.close("tag")?;
    }
    x.close("tags")
}

fn counts(x: &mut XmlWriter<impl Write>, name: &str, c: &Counts) -> io::Result<()> {
    let n = [
        c.instances,
        c.ready,
        c.not_ready,
        c.not_validated,
        c.amis_created,
        c.amis_reused,
        c.amis_failed,
        c.amis_pending,
        c.started,
        c.start_failed,
    ]
    .map(|n| n.to_string());
    let names = [
        "instances",
        "ready",
        "not_ready",
        "not_validated",
        "amis_created",
        "amis_reused",
        "amis_failed",
        "amis_pending",
        "started",
        "start_failed",
    ];
    let attrs: Vec<(&str, &str)> = names
        .iter()
        .zip(n.iter())
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    x.empty(name, &attrs)
}

fn api_calls(
    x: &mut XmlWriter<impl Write>,
    calls: &[ApiCallStat],
    retries: bool,
) -> io::Result<()> {
    x.open("api_calls", &[])?;
    for c in calls {
        let nums = [c.calls, c.throttled, c.errors, c.retries].map(|n| n.to_string());
        let mut attrs = vec![
            ("api", c.api.as_str()),
            ("calls", nums[0].as_str()),
            ("throttled", nums[1].as_str()),
            ("errors", nums[2].as_str()),
        ];
        if retries {
            attrs.push(("retries", nums[3].as_str()));
        }
        x.empty("api_call", &attrs)?;
    }
    x.close("api_calls")
}

fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Writes the report as XML.
pub fn write(report: &Report, out: impl Write) -> io::Result<()> {
    let mut x = XmlWriter::new(out)?;
    let location = format!("{NAMESPACE} {SCHEMA_PATH}");
    let version = report.schema_version.to_string();
    x.open(
        "report",
        &[
            ("xmlns", NAMESPACE),
            ("xmlns:xsi", XSI),
            ("xsi:schemaLocation", &location),
            ("schema_version", &version),
        ],
    )?;
    run(&mut x, &report.run)?;
    counts(&mut x, "totals", &report.totals)?;
    scopes(&mut x, report)?;
    instances(&mut x, report)?;
    trail(&mut x, report)?;
    performance(&mut x, &report.performance)?;
    x.close("report")?;
    x.finish().map(drop)
}

/// `<run>`: what the run was.
fn run(x: &mut XmlWriter<impl Write>, r: &RunInfo) -> io::Result<()> {
    x.open("run", &[])?;
    x.el("run_id", &r.run_id)?;
    x.el("tool", &r.tool)?;
    x.el("tool_version", &r.tool_version)?;
    x.el("started_at", &r.started_at)?;
    x.opt("finished_at", r.finished_at.as_deref())?;
    x.opt("duration_s", r.duration_s.map(|d| d.to_string()).as_deref())?;
    x.list("command_line", "arg", &r.command_line)?;
    x.open("config", &[("built_in", flag(r.config.built_in))])?;
    x.el("path", &r.config.path)?;
    x.el("sha256", &r.config.sha256)?;
    x.close("config")?;
    x.list("environments", "environment", &r.environments)?;
    x.list("regions", "region", &r.regions)?;
    x.el("dry_run", flag(r.dry_run))?;
    x.el("simulated", flag(r.simulated))?;
    x.el("interrupted", flag(r.interrupted))?;
    x.el("outcome", &r.outcome)?;
    x.close("run")?;
    Ok(())
}

/// `<landing_zones>`, `<targets>` and `<permission_checks>`.
fn scopes(x: &mut XmlWriter<impl Write>, report: &Report) -> io::Result<()> {
    x.open("landing_zones", &[])?;
    for lz in &report.landing_zones {
        x.open("landing_zone", &[("status", &lz.status)])?;
        x.el("name", &lz.name)?;
        x.el("account_id", &lz.account_id)?;
        x.el("environment", &lz.environment)?;
        x.list("regions", "region", &lz.regions)?;
        x.opt("error", lz.error.as_deref())?;
        counts(x, "counts", &lz.counts)?;
        x.close("landing_zone")?;
    }
    x.close("landing_zones")?;

    x.open("targets", &[])?;
    for t in &report.targets {
        let n = t.instances.to_string();
        x.open("target", &[("instances", &n)])?;
        x.el("landing_zone", &t.landing_zone)?;
        x.el("account_id", &t.account_id)?;
        x.el("region", &t.region)?;
        x.el("environment", &t.environment)?;
        x.el("identity", &t.identity)?;
        x.opt("error", t.error.as_deref())?;
        x.close("target")?;
    }
    x.close("targets")?;

    x.open("permission_checks", &[])?;
    for c in &report.permission_checks {
        x.open(
            "permission_check",
            &[("action", &c.action), ("allowed", flag(c.allowed))],
        )?;
        x.el("landing_zone", &c.landing_zone)?;
        x.el("account_id", &c.account_id)?;
        x.el("region", &c.region)?;
        x.opt("error", c.error.as_deref())?;
        x.close("permission_check")?;
    }
    x.close("permission_checks")?;
    Ok(())
}

/// `<instances>`: one element per instance, with its phases.
fn instances(x: &mut XmlWriter<impl Write>, report: &Report) -> io::Result<()> {
    x.open("instances", &[])?;
    for i in report.instances() {
        x.open("instance", &[("status", i.status.as_str())])?;
        x.el("landing_zone", i.landing_zone)?;
        x.el("account_id", i.account_id)?;
        x.el("region", i.region)?;
        x.el("environment", i.environment)?;
        x.el("instance_id", i.instance_id)?;
        x.opt("name", i.name)?;
        x.el("state", i.state)?;
        x.el("initial_state", i.initial_state)?;
        x.el("platform", i.platform)?;
        x.el("instance_type", i.instance_type)?;
        x.opt("private_ip", i.private_ip)?;
        x.opt("launch_time", i.launch_time.as_deref())?;
        x.opt("patch_group", i.patch_group)?;
        x.opt("environment_tag", i.environment_tag)?;
        x.opt("auto_scaling_group", i.auto_scaling_group)?;
        tags(x, i.tags)?;
        x.open("ssm", &[])?;
        x.el("ping_status", i.ssm.ping_status)?;
        x.opt("agent_version", i.ssm.agent_version)?;
        x.close("ssm")?;
        if let Some(b) = &i.backup {
            x.open("backup", &[("reused", flag(b.reused))])?;
            x.opt("ami_id", b.ami_id)?;
            x.opt("state", b.state)?;
            x.opt("created_at", b.created_at.as_deref())?;
            x.opt("completed_at", b.completed_at.as_deref())?;
            x.opt("duration_s", b.duration_s.map(|d| d.to_string()).as_deref())?;
            x.opt("expires_at", b.expires_at.as_deref())?;
            x.list("snapshot_ids", "snapshot_id", b.snapshot_ids)?;
            x.opt("error", b.error)?;
            x.close("backup")?;
        }
        if let Some(s) = &i.start {
            x.open("start", &[("started_by_run", flag(s.started_by_run))])?;
            x.el("initial_state", s.initial_state)?;
            x.el("final_state", s.final_state)?;
            x.opt("started_at", s.started_at.as_deref())?;
            x.opt("running_at", s.running_at.as_deref())?;
            x.opt("error", s.error)?;
            x.close("start")?;
        }
        if let Some(v) = &i.validation {
            x.open("validation", &[("ready", flag(v.ready))])?;
            x.el("verdict", v.verdict)?;
            x.list("reasons", "reason", v.reasons)?;
            x.close("validation")?;
        }
        x.close("instance")?;
    }
    x.close("instances")?;
    Ok(())
}

/// `<errors>`, `<audit>` and `<events>`: what went wrong, what changed, when.
fn trail(x: &mut XmlWriter<impl Write>, report: &Report) -> io::Result<()> {
    x.open("errors", &[])?;
    for e in &report.errors {
        x.open("error", &[("scope", &e.scope), ("phase", &e.phase)])?;
        x.el("landing_zone", &e.landing_zone)?;
        x.el("account_id", &e.account_id)?;
        x.opt("region", e.region.as_deref())?;
        x.opt("instance_id", e.instance_id.as_deref())?;
        x.opt("api", e.api.as_deref())?;
        x.opt("code", e.code.as_deref())?;
        x.el("message", &e.message)?;
        x.opt("request_id", e.request_id.as_deref())?;
        x.close("error")?;
    }
    x.close("errors")?;

    x.open("audit", &[])?;
    for a in report.audit() {
        x.open("change", &[("action", a.action), ("result", a.result)])?;
        x.el("at", &a.at)?;
        x.el("actor", a.actor)?;
        x.el("landing_zone", a.landing_zone)?;
        x.el("account_id", a.account_id)?;
        x.el("region", a.region)?;
        x.opt("instance_id", a.instance_id)?;
        x.opt("resource_id", a.resource_id)?;
        x.el("detail", &a.detail)?;
        tags(x, &a.tags)?;
        x.close("change")?;
    }
    x.close("audit")?;

    x.open("events", &[])?;
    for e in &report.events {
        x.open("event", &[("phase", &e.phase)])?;
        x.el("at", &e.at)?;
        x.el("scope", &e.scope)?;
        x.el("message", &e.message)?;
        x.close("event")?;
    }
    x.close("events")?;
    Ok(())
}

/// `<performance>`: where the time went, and the calls.
fn performance(x: &mut XmlWriter<impl Write>, p: &Performance) -> io::Result<()> {
    x.open("performance", &[])?;
    x.opt("duration_s", p.duration_s.map(|d| d.to_string()).as_deref())?;
    x.open("phases", &[])?;
    for ph in &p.phases {
        let nums = [ph.done, ph.failed, ph.skipped].map(|n| n.to_string());
        let secs = ph.seconds.to_string();
        x.open(
            "phase",
            &[
                ("name", &ph.phase),
                ("status", &ph.status),
                ("done", &nums[0]),
                ("failed", &nums[1]),
                ("skipped", &nums[2]),
                ("seconds", &secs),
            ],
        )?;
        x.opt("skip_reason", ph.skip_reason.as_deref())?;
        api_calls(x, &ph.api_calls, false)?;
        x.close("phase")?;
    }
    x.close("phases")?;
    api_calls(x, &p.api_calls, true)?;
    let totals = [
        p.total_calls,
        p.total_throttled,
        p.total_errors,
        p.total_retries,
    ]
    .map(|n| n.to_string());
    x.empty(
        "totals",
        &[
            ("calls", &totals[0]),
            ("throttled", &totals[1]),
            ("errors", &totals[2]),
            ("retries", &totals[3]),
        ],
    )?;
    x.close("performance")?;
    Ok(())
}
