//! The report model: one shape, built once from a [`Run`] and the
//! [`RunMeta`] that the run does not know about itself. CSV, JSON, XML and
//! HTML are all written from a [`Report`], so they cannot disagree.
//!
//! Field names are snake_case and stable: `schema/report.schema.json` and
//! `schema/prepatch-report-1.xsd` describe them, and the tests validate
//! every produced report against both. Times are UTC, RFC 3339, to the
//! second, already formatted, so every format shows the same string.

use crate::model::TagMap;
use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::cloud::{Api, CallCount};
use crate::model::{AmiId, Failure, ImageState, PermissionCheck, Record, tag};
use crate::model::{Event, Phase, Plan, Run};

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
    pub environment: &'static str,
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
    pub seconds: f64,
    pub api_calls: Vec<ApiCallStat>,
}

/// RFC 3339, UTC, to the second: the one time format of every report.
/// Written digit by digit into the stamp itself: a large run's reports
/// format millions of times, and chrono's general formatter (and then an
/// allocation each) were a tenth of their cost.
pub fn time(t: DateTime<Utc>) -> Stamp {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    // Leap seconds (nanoseconds past 1e9) and years outside 0-9999 are
    // left to chrono.
    if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
        return Stamp::Other(t.to_rfc3339_opts(SecondsFormat::Secs, true).into());
    }
    let mut out = *b"0000-00-00T00:00:00Z";
    let mut two = |at: usize, n: u32| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    let year = year as u32;
    two(0, year / 100);
    two(2, year % 100);
    two(5, t.month());
    two(8, t.day());
    two(11, t.hour());
    two(14, t.minute());
    two(17, t.second());
    Stamp::Short(out)
}

/// A time as the reports write it (see [`time`]); read it as a `str`.
#[derive(Clone, PartialEq, Eq)]
pub enum Stamp {
    /// `YYYY-MM-DDTHH:MM:SSZ`, ASCII.
    Short([u8; 20]),
    Other(Box<str>),
}

impl std::ops::Deref for Stamp {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            // Only ASCII digits and separators are ever written in.
            Stamp::Short(b) => std::str::from_utf8(b).unwrap_or_default(),
            Stamp::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

fn opt_time(t: Option<DateTime<Utc>>) -> Option<Stamp> {
    t.map(time)
}

/// Milliseconds are enough, and keep the reports free of float noise.
fn seconds(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The report's permission checks, in the run's (target) order.
fn permission_checks(run: &Run) -> Vec<PermissionCheckReport> {
    run.permission_checks
        .iter()
        .map(|c| PermissionCheckReport {
            landing_zone: c.target.landing_zone.clone(),
            account_id: c.target.account.to_string(),
            region: c.target.region.to_string(),
            action: c.action.clone(),
            allowed: c.allowed,
            error: c.error.as_ref().map(|f| f.message.clone()),
        })
        .collect()
}

/// A refused permission check as an account-region's error: the action
/// and code are AWS's, as the check met them.
fn refusal(c: &PermissionCheck) -> ErrorReport {
    let failure = c.error.as_ref();
    let reason = failure.map_or("refused", |f| f.message.as_str());
    ErrorReport {
        scope: "target".to_owned(),
        phase: Phase::Scanner.name().to_owned(),
        landing_zone: c.target.landing_zone.clone(),
        account_id: c.target.account.to_string(),
        region: Some(c.target.region.to_string()),
        instance_id: None,
        api: Some(
            failure
                .and_then(|f| f.api)
                .map_or_else(|| c.action.clone(), |a| a.name().to_owned()),
        ),
        code: failure.and_then(|f| f.code.clone()),
        message: format!("ec2:{} (DryRun): {reason}", c.action),
        request_id: failure.and_then(|f| f.request_id.clone()),
    }
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
            error: b.error.as_ref().map(|f| f.message.as_str()),
        }),
        start: r.start.as_ref().map(|s| StartReport {
            initial_state: s.initial_state.as_str(),
            final_state: s.final_state.as_str(),
            started_by_run: s.started_by_run,
            started_at: opt_time(s.started_at),
            running_at: opt_time(s.running_at),
            error: s.error.as_ref().map(|f| f.message.as_str()),
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

/// The run's execution log, indexed by phase and scope, to date changes.
/// An event and its place in the run's events.
#[derive(Clone, Copy, Debug)]
struct Indexed<'a> {
    at: DateTime<Utc>,
    index: Option<usize>,
    event: &'a Event,
}

/// The run's events by phase and scope.
struct Events<'a> {
    by_scope: BTreeMap<(Phase, &'a str), Vec<Indexed<'a>>>,
}

impl<'a> Events<'a> {
    fn new(events: &'a [Event]) -> Self {
        let mut by_scope: BTreeMap<(Phase, &str), Vec<Indexed<'a>>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            by_scope
                .entry((e.phase, e.scope.as_str()))
                .or_default()
                .push(Indexed {
                    at: e.at,
                    index: Some(i),
                    event: e,
                });
        }
        Events { by_scope }
    }

    fn find(&self, phase: Phase, scope: &str, starts: &str) -> Option<Indexed<'a>> {
        self.by_scope
            .get(&(phase, scope))?
            .iter()
            .copied()
            .find(|e| e.event.message.starts_with(starts))
    }

    fn all(&self, phase: Phase, scope: &str) -> Vec<Indexed<'a>> {
        self.by_scope
            .get(&(phase, scope))
            .cloned()
            .unwrap_or_default()
    }
}

/// What an audit entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum AuditAction {
    CreateImage,
    TagSnapshots,
    StartInstance,
    TagInstance,
}

impl AuditAction {
    fn name(self) -> &'static str {
        match self {
            AuditAction::CreateImage => "create_image",
            AuditAction::TagSnapshots => "tag_snapshots",
            AuditAction::StartInstance => "start_instance",
            AuditAction::TagInstance => "tag_instance",
        }
    }
}

/// Where an audit entry comes from: enough to sort the trail and to make
/// the entry when it is written.
#[derive(Clone, Copy, Debug)]
struct AuditKey {
    /// To the second, as the reports show it.
    at: DateTime<Utc>,
    action: AuditAction,
    target: usize,
    /// The instance, by its place in the target's records.
    record: Option<usize>,
    /// The event that tells of a failure, by its place in the run's events.
    event: Option<usize>,
}

/// The audit trail's entries, in time order, then landing zone, region,
/// instance and action.
fn audit_keys(run: &Run, events: &Events<'_>) -> Vec<AuditKey> {
    let mut out = Vec::new();
    for (ti, t) in run.targets.iter().enumerate() {
        let target = t.target.to_string();
        let key = |at: DateTime<Utc>, action, record, event| AuditKey {
            at,
            action,
            target: ti,
            record,
            event,
        };
        for (ri, r) in t.records.iter().enumerate() {
            let id = r.instance.id.as_str();
            if let Some(b) = r.backup.as_ref().filter(|b| !b.reused) {
                match (&b.ami, b.created_at) {
                    (Some(_), Some(at)) => {
                        out.push(key(at, AuditAction::CreateImage, Some(ri), None));
                    }
                    _ => {
                        if let Some(ev) = events.find(Phase::AmiBackup, id, "CreateImage failed") {
                            out.push(key(ev.at, AuditAction::CreateImage, Some(ri), ev.index));
                        }
                    }
                }
            }
            if let Some(s) = &r.start {
                match (s.started_by_run, s.started_at) {
                    (true, Some(at)) => {
                        out.push(key(at, AuditAction::StartInstance, Some(ri), None));
                        let tagged_at = events
                            .all(Phase::ServerStart, &target)
                            .into_iter()
                            .filter(|e| e.event.message.starts_with("started ") && e.at >= at)
                            .map(|e| e.at)
                            .next()
                            .unwrap_or(at);
                        out.push(key(tagged_at, AuditAction::TagInstance, Some(ri), None));
                    }
                    _ => {
                        if let Some(ev) = events.find(Phase::ServerStart, id, "start failed") {
                            out.push(key(ev.at, AuditAction::StartInstance, Some(ri), ev.index));
                        }
                    }
                }
            }
        }
        for ev in events
            .all(Phase::AmiBackup, &target)
            .into_iter()
            .filter(|e| {
                e.event.message.starts_with("tagging ")
                    && e.event.message.contains("snapshots failed")
            })
        {
            out.push(key(ev.at, AuditAction::TagSnapshots, None, ev.index));
        }
    }
    let instance = |k: &AuditKey| {
        k.record
            .map(|i| run.targets[k.target].records[i].instance.id.as_str())
    };
    out.sort_by(|a, b| {
        let (ta, tb) = (&run.targets[a.target].target, &run.targets[b.target].target);
        (
            a.at.timestamp(),
            &ta.landing_zone,
            &ta.region,
            instance(a),
            a.action,
        )
            .cmp(&(
                b.at.timestamp(),
                &tb.landing_zone,
                &tb.region,
                instance(b),
                b.action,
            ))
    });
    out
}

/// The audit entry a key stands for.
fn audit_entry<'a>(run: &'a Run, events: &Events<'a>, k: &AuditKey) -> AuditEntry<'a> {
    let t = &run.targets[k.target];
    let r = k.record.map(|i| &t.records[i]);
    let event = k.event.map(|i| &run.events[i]);
    let id = r.map(|r| r.instance.id.as_str());
    let mut e = AuditEntry {
        at: time(k.at),
        action: k.action.name(),
        actor: &t.identity,
        landing_zone: &t.target.landing_zone,
        account_id: t.target.account.as_str(),
        region: t.target.region.as_str(),
        instance_id: id,
        resource_id: None,
        result: "",
        detail: Cow::Borrowed(""),
        tags: TagMap::new(),
    };
    let message = |ev: &'a Event| Cow::Borrowed(ev.message.as_str());
    let (result, detail): (&'static str, Cow<'a, str>) = match (k.action, r, event) {
        (AuditAction::TagSnapshots, _, Some(ev)) => ("failure", message(ev)),
        (AuditAction::CreateImage, Some(r), Some(ev)) => {
            let b = r.backup.as_ref();
            let detail = b
                .and_then(|b| b.error.as_ref())
                .map_or_else(|| message(ev), |f| Cow::Borrowed(f.message.as_str()));
            ("failure", detail)
        }
        (AuditAction::CreateImage, Some(r), None) => {
            let Some((b, ami)) = r.backup.as_ref().and_then(|b| Some((b, b.ami.as_ref()?))) else {
                return e;
            };
            e.resource_id = Some(ami.as_str());
            let mut tags = TagMap::from_iter([
                (tag::RUN_ID.to_owned(), run.id.as_str().to_owned()),
                (
                    tag::INSTANCE_ID.to_owned(),
                    r.instance.id.as_str().to_owned(),
                ),
                (tag::LANDING_ZONE.to_owned(), r.landing_zone.clone()),
                (tag::CREATED_BY.to_owned(), tag::CREATED_BY_VALUE.to_owned()),
            ]);
            if let Some(x) = b.expires_at {
                tags.insert(tag::EXPIRES_AT.to_owned(), time(x).to_string());
            }
            e.tags = tags;
            match (b.state, &b.error) {
                (_, Some(err)) => ("failure", Cow::Owned(format!("AMI {ami}: {err}"))),
                (Some(ImageState::Available), None) => {
                    ("success", Cow::Owned(format!("AMI {ami} available")))
                }
                (Some(s), None) if s.is_final() => {
                    ("failure", Cow::Owned(format!("AMI {ami} {s}")))
                }
                _ => ("pending", Cow::Owned(format!("AMI {ami} pending"))),
            }
        }
        (AuditAction::StartInstance, Some(r), ev) => {
            e.resource_id = id;
            let s = r.start.as_ref();
            match (s, ev) {
                (Some(s), None) => match &s.error {
                    Some(err) => ("failure", Cow::Borrowed(err.message.as_str())),
                    None => (
                        "success",
                        Cow::Owned(format!("{} -> {}", s.initial_state, s.final_state)),
                    ),
                },
                (s, Some(ev)) => (
                    "failure",
                    s.and_then(|s| s.error.as_ref())
                        .map_or_else(|| message(ev), |f| Cow::Borrowed(f.message.as_str())),
                ),
                (None, None) => ("failure", Cow::Borrowed("")),
            }
        }
        (AuditAction::TagInstance, Some(_), _) => {
            e.resource_id = id;
            e.tags = TagMap::from_iter([(tag::STARTED_BY.to_owned(), run.id.as_str().to_owned())]);
            let target = t.target.to_string();
            match events.find(
                Phase::ServerStart,
                &target,
                "tagging started instances failed",
            ) {
                Some(m) => ("failure", message(m.event)),
                None => ("success", Cow::Owned(format!("tagged {}", tag::STARTED_BY))),
            }
        }
        _ => ("failure", Cow::Borrowed("")),
    };
    e.result = result;
    e.detail = detail;
    e
}

fn error(
    scope: &str,
    phase: Phase,
    landing_zone: &str,
    account_id: &str,
    region: Option<&str>,
    instance_id: Option<&str>,
    failure: &Failure,
) -> ErrorReport {
    ErrorReport {
        scope: scope.to_owned(),
        phase: phase.name().to_owned(),
        landing_zone: landing_zone.to_owned(),
        account_id: account_id.to_owned(),
        region: region.map(str::to_owned),
        instance_id: instance_id.map(str::to_owned),
        api: failure.api.map(|a| a.name().to_owned()),
        code: failure.code.clone(),
        message: failure.message.clone(),
        request_id: failure.request_id.clone(),
    }
}

fn errors(run: &Run, records: &[&Record]) -> Vec<ErrorReport> {
    let mut out = Vec::new();
    for f in &run.landing_zone_failures {
        out.push(error(
            "landing_zone",
            Phase::Scanner,
            &f.landing_zone,
            &f.account,
            None,
            None,
            &f.error,
        ));
    }
    let mut targets: Vec<_> = run.targets.iter().collect();
    targets.sort_by(|a, b| a.target.cmp(&b.target));
    for t in targets {
        if let Some(e) = &t.error {
            out.push(error(
                "target",
                Phase::Scanner,
                &t.target.landing_zone,
                t.target.account.as_str(),
                Some(t.target.region.as_str()),
                None,
                e,
            ));
        }
    }
    let mut refused: Vec<_> = run
        .permission_checks
        .iter()
        .filter(|c| !c.allowed)
        .collect();
    // By name, as the report lists them (an account id as text).
    refused.sort_by(|a, b| {
        let key = |c: &PermissionCheck| {
            let t = &c.target;
            (
                t.landing_zone.clone(),
                t.account.to_string(),
                t.region.to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    out.extend(refused.into_iter().map(refusal));
    for r in records {
        let at = |phase, failure: &Failure| {
            error(
                "instance",
                phase,
                &r.landing_zone,
                r.account.as_str(),
                Some(r.region.as_str()),
                Some(r.instance.id.as_str()),
                failure,
            )
        };
        if let Some(e) = r.backup.as_ref().and_then(|b| b.error.as_ref()) {
            out.push(at(Phase::AmiBackup, e));
        }
        if let Some(e) = r.start.as_ref().and_then(|s| s.error.as_ref()) {
            out.push(at(Phase::ServerStart, e));
        }
    }
    out
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
        let mut environments: Vec<String> = meta
            .landing_zones
            .iter()
            .map(|lz| lz.environment.clone())
            .collect();
        environments.sort();
        environments.dedup();
        let mut regions: Vec<String> = meta
            .landing_zones
            .iter()
            .flat_map(|lz| lz.regions.iter().cloned())
            .chain(run.targets.iter().map(|t| t.target.region.to_string()))
            .collect();
        regions.sort();
        regions.dedup();

        // Landing zones in run order; the config's facts where known.
        let landing_zones = run
            .landing_zones
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
                    error: failure.map(|f| f.error.message.clone()),
                    counts: per_lz.get(name.as_str()).cloned().unwrap_or_default(),
                }
            })
            .collect();

        let targets = run
            .targets
            .iter()
            .map(|t| TargetReport {
                landing_zone: t.target.landing_zone.clone(),
                account_id: t.target.account.to_string(),
                region: t.target.region.to_string(),
                environment: t.environment.to_string(),
                identity: t.identity.clone(),
                instances: t.records.len(),
                error: t.error.as_ref().map(|f| f.message.clone()),
            })
            .collect();

        let duration_s = run
            .finished_at
            .map(|f| seconds((f - run.started_at).num_milliseconds() as f64 / 1000.0));
        let outcome = if run.interrupted {
            "interrupted"
        } else if run.has_failures() {
            "failures"
        } else {
            "ok"
        };

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
        let permission_checks = permission_checks(run);
        let events_by_scope = Events::new(&run.events);

        Report {
            schema_version: SCHEMA_VERSION,
            run: RunInfo {
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
            },
            totals,
            landing_zones,
            targets,
            errors: errors(run, &records),
            permission_checks,
            audit: audit_keys(run, &events_by_scope),
            events_by_scope,
            events,
            performance: Performance {
                duration_s,
                phases,
                api_calls: meta.api_calls.clone(),
                total_calls: sum(|c| c.calls),
                total_throttled: sum(|c| c.throttled),
                total_errors: sum(|c| c.errors),
                total_retries: sum(|c| c.retries),
            },
            source: run,
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::CloudError;
    use crate::model::{Api, Target};

    fn aws(api: Api, code: &str, message: &str, request_id: Option<&str>) -> Failure {
        let mut e = CloudError::new(api, crate::cloud::ErrorKind::Api, code, message);
        e.request_id = request_id.map(str::to_owned);
        Failure::from(e)
    }

    #[test]
    fn an_error_report_carries_the_failures_own_action_code_and_request_id() {
        let f = aws(
            Api::StartInstances,
            "InsufficientInstanceCapacity",
            "none left",
            Some("7e1f-22"),
        );
        let e = error(
            "instance",
            Phase::ServerStart,
            "lz",
            "111111111111",
            Some("eu-west-1"),
            Some("i-1"),
            &f,
        );
        assert_eq!(e.api.as_deref(), Some("StartInstances"));
        assert_eq!(e.code.as_deref(), Some("InsufficientInstanceCapacity"));
        assert_eq!(e.request_id.as_deref(), Some("7e1f-22"));
        assert_eq!(
            e.message,
            "StartInstances: InsufficientInstanceCapacity: none left (request id 7e1f-22)"
        );
        let none = Failure::new("no answer");
        let e = error("target", Phase::Scanner, "lz", "1", None, None, &none);
        assert_eq!((e.api, e.code, e.request_id), (None, None, None));
        // Every action is named, not only those a list of names knew.
        let f = aws(Api::DescribeImages, "Unavailable", "later", None)
            .context("cannot look up this run's AMIs, nothing backed up here");
        let e = error("target", Phase::AmiBackup, "lz", "1", None, None, &f);
        assert_eq!(e.api.as_deref(), Some("DescribeImages"));
    }

    #[test]
    fn a_refused_permission_is_an_error_of_its_account_region() {
        let check = |error: Failure| PermissionCheck {
            target: Target {
                landing_zone: "app-nonprod".into(),
                account: "111111111111".parse().unwrap(),
                region: "eu-west-1".parse().unwrap(),
            },
            action: "StartInstances".into(),
            allowed: false,
            error: Some(error),
        };
        let denied = Failure {
            message: "denied: UnauthorizedOperation: You are not authorized (request id 5-5)"
                .into(),
            ..aws(
                Api::StartInstances,
                "UnauthorizedOperation",
                "You are not authorized",
                Some("5-5"),
            )
        };
        let e = refusal(&check(denied));
        assert_eq!(e.scope, "target");
        assert_eq!(e.region.as_deref(), Some("eu-west-1"));
        assert_eq!(e.api.as_deref(), Some("StartInstances"));
        assert_eq!(e.code.as_deref(), Some("UnauthorizedOperation"));
        assert_eq!(e.request_id.as_deref(), Some("5-5"));
        assert_eq!(
            e.message,
            "ec2:StartInstances (DryRun): denied: UnauthorizedOperation: You are not authorized (request id 5-5)"
        );
        let e = refusal(&check(Failure::new("could not check: timed out")));
        assert_eq!(e.api.as_deref(), Some("StartInstances"));
        assert_eq!(e.code, None);
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::TimeZone;
        for t in [
            Utc.with_ymd_and_hms(2026, 11, 30, 4, 5, 6).unwrap(),
            Utc.with_ymd_and_hms(1999, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(33, 2, 3, 10, 20, 30).unwrap(),
            Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap()
                + chrono::Duration::milliseconds(999),
        ] {
            assert_eq!(*time(t), t.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
    }

    #[test]
    fn seconds_are_rounded_to_milliseconds() {
        assert_eq!(seconds(1.234_567), 1.235);
    }
}
