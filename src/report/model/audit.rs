//! The audit trail: every change the run made or tried, in time order,
//! made from the records and dated by the run's events.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::model::{Event, Phase, Run};
use crate::model::{ImageState, TagMap, tag};

use super::*;

/// The run's execution log, indexed by phase and scope, to date changes.
/// An event and its place in the run's events.
#[derive(Clone, Copy, Debug)]
pub(super) struct Indexed<'a> {
    at: DateTime<Utc>,
    index: Option<usize>,
    event: &'a Event,
}

/// The run's events by phase and scope.
pub(super) struct Events<'a> {
    by_scope: BTreeMap<(Phase, &'a str), Vec<Indexed<'a>>>,
}

impl<'a> Events<'a> {
    pub(super) fn new(events: &'a [Event]) -> Self {
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
pub(super) enum AuditAction {
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
pub(super) struct AuditKey {
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
pub(super) fn audit_keys(run: &Run, events: &Events<'_>) -> Vec<AuditKey> {
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
pub(super) fn audit_entry<'a>(run: &'a Run, events: &Events<'a>, k: &AuditKey) -> AuditEntry<'a> {
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
                .map_or_else(|| message(ev), |f| Cow::Borrowed(f.message()));
            ("failure", detail)
        }
        (AuditAction::CreateImage, Some(r), None) => {
            let Some(made) = image_made(run, r, &mut e) else {
                return e;
            };
            made
        }
        (AuditAction::StartInstance, Some(r), ev) => {
            e.resource_id = id;
            let s = r.start.as_ref();
            match (s, ev) {
                (Some(s), None) => match &s.error {
                    Some(err) => ("failure", Cow::Borrowed(err.message())),
                    None => (
                        "success",
                        Cow::Owned(format!("{} -> {}", s.initial_state, s.final_state)),
                    ),
                },
                (s, Some(ev)) => (
                    "failure",
                    s.and_then(|s| s.error.as_ref())
                        .map_or_else(|| message(ev), |f| Cow::Borrowed(f.message())),
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

/// A made AMI's entry: its id and tags on `e`; its result and detail.
fn image_made<'a>(
    run: &Run,
    r: &'a Record,
    e: &mut AuditEntry<'a>,
) -> Option<(&'static str, Cow<'a, str>)> {
    let (b, ami) = r.backup.as_ref().and_then(|b| Some((b, b.ami.as_ref()?)))?;
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
    Some(match (b.state, &b.error) {
        (_, Some(err)) => ("failure", Cow::Owned(format!("AMI {ami}: {err}"))),
        (Some(ImageState::Available), None) => {
            ("success", Cow::Owned(format!("AMI {ami} available")))
        }
        (Some(s), None) if s.is_final() => ("failure", Cow::Owned(format!("AMI {ami} {s}"))),
        _ => ("pending", Cow::Owned(format!("AMI {ami} pending"))),
    })
}
