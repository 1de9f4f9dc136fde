//! The report model: one shape, built once from a [`Run`] and the
//! [`RunMeta`] that the run does not know about itself. CSV, JSON, XML and
//! HTML are all written from a [`Report`], so they cannot disagree.
//!
//! Field names are snake_case and stable: `schema/report.schema.json` and
//! `schema/prepatch-report-1.xsd` describe them, and the tests validate
//! every produced report against both. Times are UTC, RFC 3339, to the
//! second, already formatted, so every format shows the same string.
//!
//! This file is the whole shape, one struct per object of the schema, and
//! [`Report::new`]: it is long so that it reads beside the schema. The
//! other rooms: `time` (the one time format), `errors` (every failure as
//! the reports list it), `audit` (the audit trail, from the records and
//! the events).

mod audit;
mod errors;
mod time;

use audit::{AuditKey, Events, audit_entry, audit_keys};
use errors::{errors, permission_checks};
pub use time::{Stamp, time};
use time::{opt_time, seconds};

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::cloud::{Api, CallCount};
use crate::model::{AmiId, ImageState, Record, TagMap, tag};
use crate::model::{Plan, Run};

/// The version of the report's shape, in `schema_version` and the XML
/// namespace (`urn:prepatch:report:1`). Adding optional fields keeps it;
/// renaming or removing one bumps it.
pub const SCHEMA_VERSION: u32 = 1;

/// What a run does not know about itself: the tool, the command line, the
/// config it was given, and the AWS calls it made (counted by the cloud).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct RunMeta {
    pub tool_version: String,
    pub command_line: Vec<String>,
    pub config: ConfigRef,
    pub landing_zones: Vec<LandingZoneMeta>,
    /// Calls over the whole run, by action.
    pub api_calls: Vec<ApiCallStat>,
}

/// The config file a run was given.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ConfigRef {
    /// As given on the command line, or `(built-in demo config)`.
    pub path: String,
    /// SHA-256 of the exact text that was parsed, lowercase hex.
    pub sha256: String,
    /// The demo's built-in config, not a file.
    pub built_in: bool,
}

/// A selected landing zone, from the config.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct LandingZoneMeta {
    pub name: String,
    pub account_id: String,
    pub environment: String,
    pub regions: Vec<String>,
    pub role_arn: String,
}

/// Calls of one AWS action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ApiCallStat {
    pub api: String,
    /// Requests sent, whatever their outcome.
    pub calls: u64,
    /// Answered with a throttling error.
    pub throttled: u64,
    /// Answered with any other error.
    pub errors: u64,
    /// Throttled calls that were retried after a backoff.
    pub retries: u64,
}

impl ApiCallStat {
    /// The cloud's counters, by action, with the retries of the pacing layer.
    pub fn list(calls: &BTreeMap<Api, CallCount>, retries: &BTreeMap<Api, u64>) -> Vec<Self> {
        calls
            .iter()
            .map(|(api, c)| ApiCallStat {
                api: api.name().to_owned(),
                calls: c.calls,
                throttled: c.throttled,
                errors: c.errors,
                retries: retries.get(api).copied().unwrap_or_default(),
            })
            .collect()
    }
}

/// Everything the reports say, in one shape.
///
/// The small parts are built at once. The instances and the audit trail,
/// which grow with the fleet, are made one entry at a time from the run as
/// each format writes them ([`Report::instances`], [`Report::audit`]), so
/// writing a 100,000-instance report never holds a second copy of the fleet.
/// JSON gets the fields in this order: `schema_version`, `run`, `totals`,
/// `landing_zones`, `targets`, `permission_checks`, `instances`, `errors`,
/// `audit`, `events`, `performance`.
pub struct Report<'a> {
    pub schema_version: u32,
    pub run: RunInfo,
    pub totals: Counts,
    pub landing_zones: Vec<LandingZoneReport>,
    pub targets: Vec<TargetReport>,
    /// A dry run's EC2 `DryRun` answers, in target order; empty otherwise.
    pub permission_checks: Vec<PermissionCheckReport>,
    /// Landing zones first, then account-regions (with their refused
    /// permission checks), then instances.
    pub errors: Vec<ErrorReport>,
    /// The execution log.
    pub events: Vec<EventReport>,
    pub performance: Performance,
    /// How the notifications of the run's end went; absent when none is set.
    pub notifications: Vec<crate::model::run::Notified>,
    source: &'a Run,
    /// The run's records, sorted by landing zone, region and instance id.
    records: Vec<&'a Record>,
    /// Every change prepatch made, or tried to make, in time order.
    audit: Vec<AuditKey>,
    events_by_scope: Events<'a>,
}

impl<'a> Report<'a> {
    /// Every instance, sorted by landing zone, region and instance id.
    pub fn instances(&self) -> impl ExactSizeIterator<Item = InstanceReport<'a>> + '_ {
        self.records.iter().map(|r| instance_report(r))
    }

    /// Every change prepatch made, or tried to make, in time order.
    pub fn audit(&self) -> impl ExactSizeIterator<Item = AuditEntry<'a>> + '_ {
        self.audit
            .iter()
            .map(|k| audit_entry(self.source, &self.events_by_scope, k))
    }

    pub fn audit_len(&self) -> usize {
        self.audit.len()
    }
}

/// A sequence made as it is serialized.
struct Seq<I>(std::cell::RefCell<Option<I>>);

impl<I: Iterator<Item = T>, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.borrow_mut().take() {
            Some(items) => s.collect_seq(items),
            None => s.collect_seq(std::iter::empty::<T>()),
        }
    }
}

fn seq<I: Iterator>(items: I) -> Seq<I> {
    Seq(std::cell::RefCell::new(Some(items)))
}

impl Serialize for Report<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Report", 11)?;
        st.serialize_field("schema_version", &self.schema_version)?;
        st.serialize_field("run", &self.run)?;
        st.serialize_field("totals", &self.totals)?;
        st.serialize_field("landing_zones", &self.landing_zones)?;
        st.serialize_field("targets", &self.targets)?;
        st.serialize_field("permission_checks", &self.permission_checks)?;
        st.serialize_field("instances", &seq(self.instances()))?;
        st.serialize_field("errors", &self.errors)?;
        st.serialize_field("audit", &seq(self.audit()))?;
        st.serialize_field("events", &self.events)?;
        st.serialize_field("performance", &self.performance)?;
        if !self.notifications.is_empty() {
            st.serialize_field("notifications", &self.notifications)?;
        }
        st.end()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub tool: String,
    pub tool_version: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_s: Option<f64>,
    pub command_line: Vec<String>,
    pub config: ConfigRef,
    /// Environments of the selected landing zones, sorted.
    pub environments: Vec<String>,
    /// Regions of the selected landing zones, sorted.
    pub regions: Vec<String>,
    pub dry_run: bool,
    /// `prepatch demo`: a simulated fleet, nothing real touched.
    pub simulated: bool,
    pub interrupted: bool,
    /// `ok`, `failures` or `interrupted`, as the exit code says.
    pub outcome: String,
}

/// Counts over a set of instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub instances: usize,
    pub ready: usize,
    pub not_ready: usize,
    /// Validation did not run for them.
    pub not_validated: usize,
    /// `CreateImage` succeeded in this run.
    pub amis_created: usize,
    /// Found from an earlier attempt of the same run id.
    pub amis_reused: usize,
    /// No usable AMI: the create failed, or the AMI failed or timed out.
    pub amis_failed: usize,
    /// Still pending when the run ended (`--no-wait-backup`, interrupted).
    pub amis_pending: usize,
    /// Started by this run.
    pub started: usize,
    /// Stopped, and not started or not running after the start.
    pub start_failed: usize,
}

impl Counts {
    fn add(&mut self, r: &Record) {
        self.instances += 1;
        match status(r) {
            Status::Ready => self.ready += 1,
            Status::NotReady => self.not_ready += 1,
            Status::NotValidated => self.not_validated += 1,
        }
        if let Some(b) = &r.backup {
            if b.ami.is_some() && !b.reused && b.created_at.is_some() {
                self.amis_created += 1;
            }
            if b.reused {
                self.amis_reused += 1;
            }
            if b.failed() {
                self.amis_failed += 1;
            } else if b.state == Some(ImageState::Pending) {
                self.amis_pending += 1;
            }
        }
        if let Some(s) = &r.start {
            if s.started_by_run {
                self.started += 1;
            }
            if s.error.is_some() {
                self.start_failed += 1;
            }
        }
    }
}

fn status(r: &Record) -> Status {
    match &r.verdict {
        Some(v) if v.ready => Status::Ready,
        Some(_) => Status::NotReady,
        None => Status::NotValidated,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LandingZoneReport {
    pub name: String,
    pub account_id: String,
    pub environment: String,
    pub regions: Vec<String>,
    /// `ok`, or `failed` when the landing zone could not be worked on at all.
    pub status: String,
    pub error: Option<String>,
    pub counts: Counts,
}

/// One account-region.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub landing_zone: String,
    pub account_id: String,
    pub region: String,
    pub environment: String,
    /// The assumed role's ARN: who made the changes here.
    pub identity: String,
    pub instances: usize,
    pub error: Option<String>,
    /// Its time in each phase, in order (the dashboard's timeline).
    pub phases: Vec<SpanReport>,
}

/// An account-region's time in one phase.
#[derive(Clone, Debug, Serialize)]
pub struct SpanReport {
    pub phase: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
}

/// A dry run's question to EC2 (`DryRun`): may the role make this change
/// in this account-region? A refusal is a failure of the run.
#[derive(Clone, Debug, Serialize)]
pub struct PermissionCheckReport {
    pub landing_zone: String,
    pub account_id: String,
    pub region: String,
    /// The EC2 action: `CreateImage`, `StartInstances` or `CreateTags`.
    pub action: String,
    pub allowed: bool,
    /// AWS's refusal, or why the check could not be made; none if allowed.
    pub error: Option<String>,
}

/// Where an instance stands at the end of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ready,
    NotReady,
    NotValidated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::NotReady => "not_ready",
            Status::NotValidated => "not_validated",
        }
    }
}

/// Everything known about one instance, borrowed from the run: a report
/// writes 100,000 of these, one at a time, and copies no text to do it.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceReport<'a> {
    pub landing_zone: &'a str,
    pub account_id: &'a str,
    pub region: &'a str,
    pub environment: &'a str,
    pub instance_id: &'a str,
    /// The `Name` tag.
    pub name: Option<&'a str>,
    /// Last known state: after a start, its final state; else as scanned.
    pub state: &'static str,
    /// State at scan time.
    pub initial_state: &'static str,
    pub platform: &'static str,
    pub instance_type: &'a str,
    pub private_ip: Option<&'a str>,
    pub launch_time: Option<Stamp>,
    /// The `Patch Group` (or `PatchGroup`) tag.
    pub patch_group: Option<&'a str>,
    /// The instance's own `Environment` tag.
    pub environment_tag: Option<&'a str>,
    /// The EC2 Auto Scaling group it belongs to (`aws:autoscaling:groupName`).
    pub auto_scaling_group: Option<&'a str>,
    /// Every tag, by key.
    pub tags: &'a TagMap,
    pub ssm: SsmReport<'a>,
    pub backup: Option<BackupReport<'a>>,
    pub start: Option<StartReport<'a>>,
    pub validation: Option<ValidationReport<'a>>,
    pub status: Status,
}

#[derive(Clone, Debug, Serialize)]
pub struct SsmReport<'a> {
    pub ping_status: &'static str,
    pub agent_version: Option<&'a str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupReport<'a> {
    pub ami_id: Option<&'a str>,
    /// `pending`, `available`, `failed`, `unusable`; none if no AMI exists.
    pub state: Option<&'static str>,
    /// When `CreateImage` returned; none for a reused AMI.
    pub created_at: Option<Stamp>,
    pub completed_at: Option<Stamp>,
    pub duration_s: Option<i64>,
    pub expires_at: Option<Stamp>,
    pub snapshot_ids: &'a [String],
    pub reused: bool,
    pub error: Option<&'a str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StartReport<'a> {
    pub initial_state: &'static str,
    pub final_state: &'static str,
    pub started_by_run: bool,
    pub started_at: Option<Stamp>,
    pub running_at: Option<Stamp>,
    pub error: Option<&'a str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ValidationReport<'a> {
    /// `READY` or `NOT READY`.
    pub verdict: &'static str,
    pub ready: bool,
    pub reasons: &'a [String],
}

/// A failure, where it belongs, and what AWS said when it was an AWS error.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorReport {
    /// `landing_zone`, `target` or `instance`.
    pub scope: String,
    pub phase: String,
    pub landing_zone: String,
    pub account_id: String,
    pub region: Option<String>,
    pub instance_id: Option<String>,
    /// The AWS action, when the error came from one.
    pub api: Option<String>,
    /// AWS's error code, for example `InsufficientInstanceCapacity`.
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

/// One change prepatch made in an account, or tried to make.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry<'a> {
    pub at: Stamp,
    /// `create_image`, `start_instance`, `tag_instance` or `tag_snapshots`.
    pub action: &'static str,
    /// The assumed role's ARN that made the call.
    pub actor: &'a str,
    pub landing_zone: &'a str,
    pub account_id: &'a str,
    pub region: &'a str,
    pub instance_id: Option<&'a str>,
    /// What the change made or touched: the AMI id, or the instance id.
    pub resource_id: Option<&'a str>,
    /// `success`, `failure`, or `pending` (an AMI not final yet).
    pub result: &'static str,
    pub detail: Cow<'a, str>,
    /// The tags the change wrote.
    pub tags: TagMap,
}

#[derive(Clone, Debug, Serialize)]
pub struct EventReport {
    pub at: String,
    pub phase: String,
    pub scope: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Performance {
    pub duration_s: Option<f64>,
    pub phases: Vec<PhaseReport>,
    pub api_calls: Vec<ApiCallStat>,
    pub total_calls: u64,
    pub total_throttled: u64,
    pub total_errors: u64,
    pub total_retries: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    pub phase: String,
    /// `run` or `skipped`.
    pub status: String,
    pub skip_reason: Option<String>,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    /// From the first account-region into the phase to the last one out:
    /// account-regions go through the phases each at its own pace, so
    /// phases overlap and their times add up to more than the run's.
    pub seconds: f64,
    pub api_calls: Vec<ApiCallStat>,
}

pub(super) fn instance_report(r: &Record) -> InstanceReport<'_> {
    let i = &r.instance;
    let status = status(r);
    InstanceReport {
        landing_zone: &r.landing_zone,
        account_id: r.account.as_str(),
        region: r.region.as_str(),
        environment: r.environment.as_str(),
        instance_id: i.id.as_str(),
        name: i.name(),
        state: r.current_state().as_str(),
        initial_state: i.state.as_str(),
        platform: i.platform.as_str(),
        instance_type: &i.instance_type,
        private_ip: i.private_ip.as_deref(),
        launch_time: opt_time(i.launch_time),
        patch_group: i.tag(tag::PATCH_GROUP).or_else(|| i.tag("PatchGroup")),
        auto_scaling_group: i.auto_scaling_group(),
        environment_tag: i.tag(tag::ENVIRONMENT),
        tags: &i.tags,
        ssm: SsmReport {
            ping_status: r.ssm.ping.as_str(),
            agent_version: r.ssm.agent_version.as_deref(),
        },
        backup: r.backup.as_ref().map(|b| BackupReport {
            ami_id: b.ami.as_ref().map(AmiId::as_str),
            state: b.state.map(ImageState::as_str),
            created_at: opt_time(b.created_at),
            completed_at: opt_time(b.completed_at),
            duration_s: b.duration_secs(),
            expires_at: opt_time(b.expires_at),
            snapshot_ids: &b.snapshot_ids,
            reused: b.reused,
            error: b.error.as_ref().map(|f| f.message()),
        }),
        start: r.start.as_ref().map(|s| StartReport {
            initial_state: s.initial_state.as_str(),
            final_state: s.final_state.as_str(),
            started_by_run: s.started_by_run,
            started_at: opt_time(s.started_at),
            running_at: opt_time(s.running_at),
            error: s.error.as_ref().map(|f| f.message()),
        }),
        validation: r.verdict.as_ref().map(|v| ValidationReport {
            verdict: v.label(),
            ready: v.ready,
            reasons: &v.reasons,
        }),
        status,
    }
}

/// The run's records in report order: landing zone, region, instance id.
pub(super) fn sorted_records(run: &Run) -> impl Iterator<Item = &Record> {
    let mut records: Vec<&Record> = run.records().collect();
    records.sort_by(|a, b| {
        (&a.landing_zone, &a.region, &a.instance.id).cmp(&(
            &b.landing_zone,
            &b.region,
            &b.instance.id,
        ))
    });
    records.into_iter()
}

fn phase_calls(calls: &BTreeMap<Api, CallCount>) -> Vec<ApiCallStat> {
    ApiCallStat::list(calls, &BTreeMap::new())
        .into_iter()
        .map(|mut c| {
            // Retries are counted per run, not per phase.
            c.retries = 0;
            c
        })
        .collect()
}

impl<'a> Report<'a> {
    /// Builds the report of a run.
    pub fn new(run: &'a Run, meta: &RunMeta) -> Report<'a> {
        let records: Vec<&Record> = sorted_records(run).collect();
        let mut totals = Counts::default();
        let mut per_lz: BTreeMap<&str, Counts> = BTreeMap::new();
        for r in &records {
            totals.add(r);
            per_lz.entry(r.landing_zone.as_str()).or_default().add(r);
        }
        let duration_s = run
            .finished_at
            .map(|f| seconds((f - run.started_at).num_milliseconds() as f64 / 1000.0));
        let events_by_scope = Events::new(&run.events);
        Report {
            schema_version: SCHEMA_VERSION,
            run: run_info(run, meta, duration_s),
            totals,
            landing_zones: landing_zones(run, meta, &per_lz),
            targets: targets(run),
            errors: errors(run, &records),
            permission_checks: permission_checks(run),
            audit: audit_keys(run, &events_by_scope),
            events_by_scope,
            events: events(run),
            performance: performance(run, meta, duration_s),
            notifications: run.notifications.clone(),
            source: run,
            records,
        }
    }
}

/// What the run was: its id, times, command line, config and outcome.
fn run_info(run: &Run, meta: &RunMeta, duration_s: Option<f64>) -> RunInfo {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    let environments = sorted(
        meta.landing_zones
            .iter()
            .map(|lz| lz.environment.clone())
            .collect(),
    );
    let regions = sorted(
        meta.landing_zones
            .iter()
            .flat_map(|lz| lz.regions.iter().cloned())
            .chain(run.targets.iter().map(|t| t.target.region.to_string()))
            .collect(),
    );
    let outcome = run.outcome();
    RunInfo {
        run_id: run.id.to_string(),
        tool: "prepatch".to_owned(),
        tool_version: meta.tool_version.clone(),
        started_at: time(run.started_at).to_string(),
        finished_at: opt_time(run.finished_at).map(|t| t.to_string()),
        duration_s,
        command_line: meta.command_line.clone(),
        config: meta.config.clone(),
        environments,
        regions,
        dry_run: run.dry_run,
        simulated: run.simulated,
        interrupted: run.interrupted,
        outcome: outcome.to_owned(),
    }
}

/// Landing zones in run order; the config's facts where known.
fn landing_zones(
    run: &Run,
    meta: &RunMeta,
    per_lz: &BTreeMap<&str, Counts>,
) -> Vec<LandingZoneReport> {
    run.landing_zones
        .iter()
        .map(|name| {
            let known = meta.landing_zones.iter().find(|lz| lz.name == *name);
            let failure = run
                .landing_zone_failures
                .iter()
                .find(|f| f.landing_zone == *name);
            let target = run.targets.iter().find(|t| t.target.landing_zone == *name);
            LandingZoneReport {
                name: name.clone(),
                account_id: known
                    .map(|k| k.account_id.clone())
                    .or_else(|| failure.map(|f| f.account.clone()))
                    .or_else(|| target.map(|t| t.target.account.to_string()))
                    .unwrap_or_default(),
                environment: known
                    .map(|k| k.environment.clone())
                    .or_else(|| target.map(|t| t.environment.to_string()))
                    .unwrap_or_default(),
                regions: known.map(|k| k.regions.clone()).unwrap_or_default(),
                status: if failure.is_some() { "failed" } else { "ok" }.to_owned(),
                error: failure.map(|f| f.error.message().to_owned()),
                counts: per_lz.get(name.as_str()).cloned().unwrap_or_default(),
            }
        })
        .collect()
}

fn targets(run: &Run) -> Vec<TargetReport> {
    run.targets
        .iter()
        .map(|t| TargetReport {
            landing_zone: t.target.landing_zone.clone(),
            account_id: t.target.account.to_string(),
            region: t.target.region.to_string(),
            environment: t.environment.to_string(),
            identity: t.identity.clone(),
            instances: t.records.len(),
            error: t.error.as_ref().map(|f| f.message().to_owned()),
            phases: t
                .spans
                .iter()
                .map(|s| SpanReport {
                    phase: s.phase.name(),
                    started_at: time(s.from).to_string(),
                    finished_at: time(s.to).to_string(),
                    seconds: seconds((s.to - s.from).to_std().unwrap_or_default().as_secs_f64()),
                })
                .collect(),
        })
        .collect()
}

/// The execution log, in time order.
fn events(run: &Run) -> Vec<EventReport> {
    let mut events: Vec<EventReport> = run
        .events
        .iter()
        .map(|e| EventReport {
            at: time(e.at).to_string(),
            phase: e.phase.name().to_owned(),
            scope: e.scope.clone(),
            message: e.message.clone(),
        })
        .collect();
    events.sort_by(|a, b| a.at.cmp(&b.at));
    events
}

/// Where the time went, and the calls each phase made.
fn performance(run: &Run, meta: &RunMeta, duration_s: Option<f64>) -> Performance {
    let phases = run
        .phases
        .iter()
        .map(|p| PhaseReport {
            phase: p.phase.name().to_owned(),
            status: match p.plan {
                Plan::Run => "run",
                Plan::Skip(_) => "skipped",
            }
            .to_owned(),
            skip_reason: match &p.plan {
                Plan::Run => None,
                Plan::Skip(why) => Some(why.clone()),
            },
            done: p.done,
            failed: p.failed,
            skipped: p.skipped,
            seconds: seconds(p.seconds),
            api_calls: phase_calls(&p.api_calls),
        })
        .collect();
    let sum = |f: fn(&ApiCallStat) -> u64| meta.api_calls.iter().map(f).sum::<u64>();
    Performance {
        duration_s,
        phases,
        api_calls: meta.api_calls.clone(),
        total_calls: sum(|c| c.calls),
        total_throttled: sum(|c| c.throttled),
        total_errors: sum(|c| c.errors),
        total_retries: sum(|c| c.retries),
    }
}
