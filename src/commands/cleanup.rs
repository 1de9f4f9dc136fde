//! `prepatch cleanup`: retention. Deregisters prepatch's AMIs that are due
//! and deletes their snapshots. Due is when AWS's `CreationDate` plus the
//! retention the run recorded has passed, or the `prepatch:expires-at` tag
//! if that is later: a tag can keep a backup longer, never make it go
//! sooner ([`due_at`]). With `--older-than DAYS`: whose `CreationDate` is
//! more than DAYS days ago; with `--run ID`: every backup of that run, to
//! release them once the patch went well. `--instances` narrows any of
//! these to the backups of the instances named.
//!
//! It never touches what prepatch did not make, whatever the flags say.
//! Tags only point at candidates: an AMI must carry
//! `prepatch:created-by=prepatch` (exactly), a `prepatch:run-id` and a
//! `prepatch:instance-id`, and then be that run's backup of that instance
//! by AWS's own fields and the journal ([`Image::backup_of`]: made by
//! `CreateImage` from that instance, not a `CopyImage` copy, named as
//! prepatch names it, and the AMI the journal's `CreateImage` made where
//! this journal has the run). Anything else carrying the tags is LEFT
//! ALONE with the reason, and so are its snapshots. A snapshot must come
//! from such an AMI's block device mappings, carry
//! `prepatch:created-by=prepatch`, and be used by no AMI that stays. Per account-region: one
//! `DescribeImages` (every AMI the account owns, so that shared snapshots
//! are seen) and one `DescribeSnapshots` (prepatch's), then one
//! `DeregisterImage` / `DeleteSnapshot` per resource, paced by
//! `cloud::limit`. It shows the plan first and deletes only with `--yes`;
//! `--dry-run` never deletes. Every deletion is journaled.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Context, Operation, connect_aws, environments_of, stdout_error};
use crate::cli::CleanupArgs;
use crate::cloud::limit::Paced;
use crate::cloud::{Cloud, CloudError, ImageFilter};
use crate::config::{LandingZone, MIN_RETENTION_DAYS};
use crate::journal::{Journal, Journaled, NewRun};
use crate::model::{
    AmiId, Environment, Image, ImageState, Region, RunId, Target, Witness, Witnesses, tag,
};
use crate::workflow::{Shutdown, for_each_target};
use crate::{Error, Outcome};

/// Which AMIs are due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// `prepatch:expires-at` is in the past.
    Expired,
    /// The run (the time in `prepatch:run-id`) began more than this many days ago.
    OlderThan(u32),
    /// Every backup of this run, whatever its expiry.
    Run(String),
}

/// What cleanup looks at: which AMIs are due, of which instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub criterion: Criterion,
    /// Only the backups of these instances (`prepatch:instance-id`, and
    /// the AMI's own source); empty: every instance.
    pub instances: BTreeSet<String>,
}

impl From<Criterion> for Due {
    fn from(criterion: Criterion) -> Due {
        Due {
            criterion,
            instances: BTreeSet::new(),
        }
    }
}

/// What happened to one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum Done {
    Planned,
    Deleted,
    Failed(String),
}

/// A snapshot of a due AMI.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotPlan {
    pub id: String,
    /// Deleted after its AMIs are deregistered; else kept, see `reason`.
    pub delete: bool,
    pub reason: String,
    pub done: Done,
}

/// A due AMI.
#[derive(Clone, Debug, Serialize)]
pub struct AmiPlan {
    pub ami: AmiId,
    /// The instance it is the backup of.
    pub instance_id: String,
    pub name: String,
    pub run_id: String,
    pub expires_at: String,
    pub snapshots: Vec<SnapshotPlan>,
    pub done: Done,
}

/// One account-region.
#[derive(Clone, Debug, Serialize)]
pub struct TargetPlan {
    pub target: Target,
    pub environment: Environment,
    pub amis: Vec<AmiPlan>,
    /// prepatch's AMIs that are not due.
    pub kept: usize,
    /// prepatch-tagged AMIs whose tags cannot be read as prepatch writes them.
    pub unreadable: Vec<String>,
    /// AMIs tagged as prepatch's that are not backups it made (a copy, a
    /// forged tag), with the reason: never touched.
    pub left_alone: Vec<String>,
    /// Due backups still `pending`: left for a later cleanup, as their
    /// snapshots are not all listed until they are available.
    pub pending: Vec<String>,
    /// Snapshots of due backups whose AMI is already gone (an earlier
    /// cleanup deregistered it and failed to delete them): deleted now.
    pub orphans: Vec<OrphanPlan>,
    pub error: Option<String>,
}

/// A snapshot whose backup AMI is gone.
#[derive(Clone, Debug, Serialize)]
pub struct OrphanPlan {
    pub id: String,
    /// The AMI it was made for, by EC2's description of it.
    pub ami: AmiId,
    pub instance_id: String,
    pub run_id: String,
    pub done: Done,
}

/// Finds the due AMIs and their deletable snapshots in every target.
/// `witnesses` gives what the journal says of a run (nothing, for a run
/// it does not have).
pub async fn plan(
    cloud: &dyn Cloud,
    landing_zones: &[LandingZone],
    now: DateTime<Utc>,
    due: &Due,
    session_name: &str,
    witnesses: &dyn Fn(&str) -> Witnesses,
) -> Vec<TargetPlan> {
    // Asked once per run met, whichever account-region meets it first.
    let known: Mutex<BTreeMap<String, Witnesses>> = Mutex::default();
    let witnesses = |run: &str| -> Witnesses {
        let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .entry(run.to_owned())
            .or_insert_with(|| witnesses(run))
            .clone()
    };
    let witnesses = &witnesses;
    super::for_each_region(cloud, landing_zones, session_name, |lz, region, assumed| {
        plan_target(cloud, lz, region, assumed, now, due, witnesses)
    })
    .await
}

/// One account-region's plan: which of prepatch's AMIs are due.
async fn plan_target(
    cloud: &dyn Cloud,
    lz: &LandingZone,
    region: &Region,
    assumed: Result<(), CloudError>,
    now: DateTime<Utc>,
    wanted: &Due,
    witnesses: &dyn Fn(&str) -> Witnesses,
) -> TargetPlan {
    let target = Target {
        landing_zone: lz.name.clone(),
        account: lz.account_id.clone(),
        region: region.clone(),
    };
    let mut p = TargetPlan {
        target: target.clone(),
        environment: lz.environment.clone(),
        amis: Vec::new(),
        kept: 0,
        unreadable: Vec::new(),
        left_alone: Vec::new(),
        pending: Vec::new(),
        orphans: Vec::new(),
        error: None,
    };
    if let Err(e) = assumed {
        p.error = Some(format!("cannot assume the role: {e}"));
        return p;
    }
    let (images, snapshots) = match tokio::join!(
        cloud.describe_images(&target, &ImageFilter::Owned),
        cloud.describe_snapshots(&target, tag::CREATED_BY, tag::CREATED_BY_VALUE),
    ) {
        (Ok(i), s) => (i, s),
        (Err(e), _) => {
            p.error = Some(e.to_string());
            return p;
        }
    };
    let snapshots = match snapshots {
        Ok(s) => s
            .into_iter()
            .filter(|s| {
                s.tags.get(tag::CREATED_BY).map(String::as_str) == Some(tag::CREATED_BY_VALUE)
            })
            .collect(),
        Err(e) => {
            // Without the tags no snapshot is known to be ours: keep them all.
            tracing::warn!(target_ = %target, error = %e, "DescribeSnapshots failed; snapshots are kept");
            Vec::new()
        }
    };
    let is_due = |run_id: &str,
                  expires: Option<&str>,
                  created: Option<DateTime<Utc>>|
     -> Result<bool, String> {
        Ok(match &wanted.criterion {
            Criterion::Run(run) => run_id == run,
            Criterion::Expired => {
                let expires = expires.ok_or("no expires-at tag")?;
                let retention = witnesses(run_id).retention_for(&target.landing_zone);
                due_at(created, expires, retention)? <= now
            }
            Criterion::OlderThan(days) => {
                let created = created.ok_or("AWS gives no creation time")?;
                now - created > chrono::Duration::days((*days).into())
            }
        })
    };
    let mut due = Vec::new();
    for image in &images {
        let t = &image.tags;
        if t.get(tag::CREATED_BY).map(String::as_str) != Some(tag::CREATED_BY_VALUE) {
            continue;
        }
        if !wanted.instances.is_empty()
            && !t
                .get(tag::INSTANCE_ID)
                .is_some_and(|i| wanted.instances.contains(i))
        {
            continue;
        }
        let (Some(run_id), Some(expires)) = (t.get(tag::RUN_ID), t.get(tag::EXPIRES_AT)) else {
            p.unreadable
                .push(format!("{}: no run-id or expires-at tag", image.id));
            continue;
        };
        match is_due(run_id, Some(expires), image.created_at) {
            Err(why) => {
                p.unreadable.push(format!("{}: {why}", image.id));
                continue;
            }
            Ok(false) => {
                p.kept += 1;
                continue;
            }
            Ok(true) => {}
        }
        let w = witnesses(run_id);
        match image.backup_of(&target.account, run_id, |id| w.of(id)) {
            // Its snapshots are listed only once it is available.
            Ok(_) if image.state == ImageState::Pending => p.pending.push(format!(
                "{}: still pending: its snapshots are not all listed yet; run cleanup again once it is available",
                image.id
            )),
            Ok(_) => due.push(image),
            Err(why) => p.left_alone.push(format!("{}: {why}", image.id)),
        }
    }
    p.orphans = orphans(&images, &snapshots, wanted, &is_due, witnesses);
    if !due.is_empty() {
        p.amis = ami_plans(&images, &snapshots, due);
    }
    p
}

/// Whether a backup of a run (its id, its `prepatch:expires-at`, when AWS
/// says it was made) is due.
type IsDue<'a> = dyn Fn(&str, Option<&str>, Option<DateTime<Utc>>) -> Result<bool, String> + 'a;

/// When a backup may go, by AWS's clock and the run's record: never before
/// its creation (`CreationDate`, a snapshot's `StartTime`) plus the
/// retention the run recorded. Its `prepatch:expires-at` tag can put that
/// later, never earlier: whoever can tag an AMI must not be able to make
/// it go early. Without the run's record, the tag is believed only if it
/// is no earlier than the creation plus the shortest retention a config
/// allows ([`MIN_RETENTION_DAYS`]).
pub fn due_at(
    created: Option<DateTime<Utc>>,
    expires: &str,
    retention_days: Option<u32>,
) -> Result<DateTime<Utc>, String> {
    let tagged = expires
        .parse::<DateTime<Utc>>()
        .map_err(|_| format!("expires-at {expires:?} is not a time"))?;
    let created = created.ok_or("AWS gives no creation time")?;
    match retention_days {
        Some(days) => Ok(tagged.max(created + chrono::Duration::days(days.into()))),
        None => {
            let floor = created + chrono::Duration::days(MIN_RETENTION_DAYS.into());
            if tagged < floor {
                return Err(format!(
                    "expires-at {expires} is earlier than its creation ({}) plus {MIN_RETENTION_DAYS} day, \
                     the shortest retention, and the journal does not have its run: not believed \
                     (cleanup --run <run-id> removes a run's backups)",
                    created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
            Ok(tagged)
        }
    }
}

/// Snapshots of prepatch's backups whose AMI is gone: a cleanup that
/// deregistered the AMI and then failed to delete them (or was stopped
/// between the two) leaves them, and nothing else would ever find them.
/// Each must carry prepatch's tags, be due by them as its AMI was, be
/// used by no AMI the account owns, and be, by EC2's own description,
/// made by `CreateImage` of the instance its tag names for an AMI that no
/// longer exists; where the journal has the run, that AMI must be the one
/// the run's `CreateImage` made.
fn orphans(
    images: &[Image],
    snapshots: &[crate::model::Snapshot],
    wanted: &Due,
    is_due: &IsDue<'_>,
    witnesses: &dyn Fn(&str) -> Witnesses,
) -> Vec<OrphanPlan> {
    let owned: BTreeSet<&AmiId> = images.iter().map(|i| &i.id).collect();
    let used: BTreeSet<&str> = images
        .iter()
        .flat_map(|i| i.snapshot_ids.iter().map(String::as_str))
        .collect();
    let mut out = Vec::new();
    for s in snapshots {
        let tag = |k: &str| s.tags.get(k).map(String::as_str);
        let (Some(run_id), Some(instance)) = (tag(tag::RUN_ID), tag(tag::INSTANCE_ID)) else {
            continue;
        };
        if used.contains(s.id.as_str())
            || (!wanted.instances.is_empty() && !wanted.instances.contains(instance))
            || is_due(run_id, tag(tag::EXPIRES_AT), s.started_at) != Ok(true)
        {
            continue;
        }
        let Some((made_from, ami)) = s.made_for() else {
            continue;
        };
        if made_from.as_str() != instance || owned.contains(&ami) {
            continue;
        }
        match witnesses(run_id).of(&made_from) {
            Witness::Made(made) if made != ami => continue,
            Witness::NotAttempted => continue,
            _ => {}
        }
        out.push(OrphanPlan {
            id: s.id.clone(),
            ami,
            instance_id: instance.to_owned(),
            run_id: run_id.to_owned(),
            done: Done::Planned,
        });
    }
    out
}

/// The due AMIs' plans: each snapshot deleted only if prepatch tagged it
/// and no AMI that stays uses it.
fn ami_plans(
    images: &[Image],
    snapshots: &[crate::model::Snapshot],
    due: Vec<&Image>,
) -> Vec<AmiPlan> {
    let mut amis = Vec::new();
    let tagged: BTreeSet<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
    let due_ids: BTreeSet<&AmiId> = due.iter().map(|i| &i.id).collect();
    let mut users: BTreeMap<&str, Vec<&AmiId>> = BTreeMap::new();
    for image in images {
        for s in image.snapshot_ids.iter() {
            users.entry(s.as_str()).or_default().push(&image.id);
        }
    }
    for image in due {
        let snapshots = image
            .snapshot_ids
            .iter()
            .map(|s| {
                let other = users
                    .get(s.as_str())
                    .into_iter()
                    .flatten()
                    .find(|a| !due_ids.contains(*a));
                let (delete, reason) = if !tagged.contains(s.as_str()) {
                    (false, "kept: not tagged by prepatch".to_owned())
                } else if let Some(a) = other {
                    (false, format!("kept: also used by {a}"))
                } else {
                    (true, String::new())
                };
                SnapshotPlan {
                    id: s.clone(),
                    delete,
                    reason,
                    done: Done::Planned,
                }
            })
            .collect();
        amis.push(AmiPlan {
            ami: image.id.clone(),
            instance_id: image
                .tags
                .get(tag::INSTANCE_ID)
                .cloned()
                .unwrap_or_default(),
            name: image.name.to_string(),
            run_id: image.tags.get(tag::RUN_ID).cloned().unwrap_or_default(),
            expires_at: image.tags.get(tag::EXPIRES_AT).cloned().unwrap_or_default(),
            snapshots,
            done: Done::Planned,
        });
    }
    amis
}

/// Deregisters the due AMIs, then deletes each snapshot once every due
/// AMI using it is gone.
pub async fn apply(cloud: &dyn Cloud, plans: &mut [TargetPlan]) {
    apply_until(cloud, plans, &Shutdown::never()).await
}

/// What was not done because of Ctrl-C.
const INTERRUPTED: &str = "not done: interrupted";

/// [`apply`] on every account-region at once, until `shutdown`: then no
/// deletion is sent any more, and the rest is reported as not done.
pub async fn apply_until(cloud: &dyn Cloud, plans: &mut [TargetPlan], shutdown: &Shutdown) {
    for_each_target(plans, |p| apply_target(cloud, p, shutdown)).await;
}

async fn apply_target(cloud: &dyn Cloud, p: &mut TargetPlan, shutdown: &Shutdown) {
    if p.error.is_some() {
        return;
    }
    let t = p.target.clone();
    for a in &mut p.amis {
        a.done = match shutdown.requested() {
            true => Done::Failed(INTERRUPTED.into()),
            false => match cloud.deregister_image(&t, &a.ami).await {
                Ok(()) => Done::Deleted,
                Err(e) => Done::Failed(e.to_string()),
            },
        };
    }
    let gone: BTreeSet<AmiId> = p
        .amis
        .iter()
        .filter(|a| a.done == Done::Deleted)
        .map(|a| a.ami.clone())
        .collect();
    let mut deleted: BTreeMap<String, Done> = BTreeMap::new();
    let snapshot_amis: BTreeMap<String, Vec<AmiId>> =
        p.amis.iter().fold(BTreeMap::new(), |mut m, a| {
            for s in &a.snapshots {
                m.entry(s.id.clone()).or_default().push(a.ami.clone());
            }
            m
        });
    for a in &mut p.amis {
        for s in a.snapshots.iter_mut().filter(|s| s.delete) {
            if let Some(done) = deleted.get(&s.id) {
                s.done = done.clone();
                continue;
            }
            let all_gone = snapshot_amis
                .get(&s.id)
                .is_some_and(|amis| amis.iter().all(|a| gone.contains(a)));
            s.done = if !all_gone {
                Done::Failed("kept: its AMI was not deregistered".into())
            } else if shutdown.requested() {
                Done::Failed(INTERRUPTED.into())
            } else {
                match cloud.delete_snapshot(&t, &s.id).await {
                    Ok(()) => Done::Deleted,
                    Err(e) => Done::Failed(e.to_string()),
                }
            };
            deleted.insert(s.id.clone(), s.done.clone());
        }
    }
    for o in &mut p.orphans {
        o.done = if shutdown.requested() {
            Done::Failed(INTERRUPTED.into())
        } else {
            match cloud.delete_snapshot(&t, &o.id).await {
                Ok(()) => Done::Deleted,
                Err(e) => Done::Failed(e.to_string()),
            }
        };
    }
}

/// Totals: (AMIs due, snapshots to delete, AMIs deregistered, snapshots
/// deleted, failures, kept).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub amis_due: usize,
    pub snapshots_due: usize,
    pub amis_deleted: usize,
    pub snapshots_deleted: usize,
    pub snapshots_kept: usize,
    pub failed: usize,
    pub kept: usize,
}

pub fn totals(plans: &[TargetPlan]) -> Totals {
    let mut t = Totals::default();
    for p in plans {
        t.kept += p.kept;
        if p.error.is_some() {
            t.failed += 1;
        }
        let mut snaps: BTreeMap<&str, (&SnapshotPlan, bool)> = BTreeMap::new();
        for a in &p.amis {
            t.amis_due += 1;
            match &a.done {
                Done::Deleted => t.amis_deleted += 1,
                Done::Failed(_) => t.failed += 1,
                Done::Planned => {}
            }
            for s in &a.snapshots {
                snaps.entry(&s.id).or_insert((s, s.delete));
            }
        }
        for o in &p.orphans {
            t.snapshots_due += 1;
            match &o.done {
                Done::Deleted => t.snapshots_deleted += 1,
                Done::Failed(_) => t.failed += 1,
                Done::Planned => {}
            }
        }
        for (s, delete) in snaps.values() {
            if !delete {
                t.snapshots_kept += 1;
                continue;
            }
            t.snapshots_due += 1;
            match &s.done {
                Done::Deleted => t.snapshots_deleted += 1,
                Done::Failed(_) => t.failed += 1,
                Done::Planned => {}
            }
        }
    }
    t
}

/// The one-line summary.
pub fn summary_line(plans: &[TargetPlan], deleted: bool) -> String {
    let t = totals(plans);
    if deleted {
        format!(
            "deregistered {} of {} due AMIs, deleted {} of {} snapshots ({} kept), {} prepatch AMIs not due kept, {} failures",
            t.amis_deleted,
            t.amis_due,
            t.snapshots_deleted,
            t.snapshots_due,
            t.snapshots_kept,
            t.kept,
            t.failed
        )
    } else {
        format!(
            "plan: {} AMIs to deregister, {} snapshots to delete ({} kept), {} prepatch AMIs not due kept; nothing deleted",
            t.amis_due, t.snapshots_due, t.snapshots_kept, t.kept
        )
    }
}

/// The plan (or what was done), per target.
pub fn write_plan(plans: &[TargetPlan], out: &mut dyn Write) -> std::io::Result<()> {
    for p in plans {
        if let Some(e) = &p.error {
            crate::oneline!(out, "  {} ({}): FAILED: {e}", p.target, p.target.account)?;
            continue;
        }
        crate::oneline!(
            out,
            "  {} ({}): {} AMIs due, {} kept",
            p.target,
            p.target.account,
            p.amis.len(),
            p.kept
        )?;
        for u in &p.unreadable {
            crate::oneline!(out, "    left alone: {u}")?;
        }
        for u in &p.left_alone {
            crate::oneline!(out, "    LEFT ALONE {u}")?;
        }
        for u in &p.pending {
            crate::oneline!(out, "    not yet: {u}")?;
        }
        for o in &p.orphans {
            let what = match &o.done {
                Done::Planned => "delete".to_owned(),
                Done::Deleted => "deleted".to_owned(),
                Done::Failed(e) => format!("FAILED: {e}"),
            };
            crate::oneline!(
                out,
                "    {} of {} (run {}), left by {} which is gone: {what}",
                o.id,
                o.instance_id,
                o.run_id,
                o.ami
            )?;
        }
        for a in &p.amis {
            let done = match &a.done {
                Done::Planned => String::new(),
                Done::Deleted => " -> deregistered".into(),
                Done::Failed(e) => format!(" -> FAILED: {e}"),
            };
            crate::oneline!(
                out,
                "    {} of {} {} (run {}, expires {}){done}",
                a.ami,
                a.instance_id,
                a.name,
                a.run_id,
                a.expires_at
            )?;
            for s in &a.snapshots {
                let what = match (&s.done, s.delete) {
                    (_, false) => s.reason.clone(),
                    (Done::Planned, true) => "delete".into(),
                    (Done::Deleted, true) => "deleted".into(),
                    (Done::Failed(e), true) => format!("FAILED: {e}"),
                };
                crate::oneline!(out, "      {} {what}", s.id)?;
            }
        }
    }
    Ok(())
}

/// Writes `cleanup.json` into `dir`.
fn write_report(dir: &Path, id: &str, deleted: bool, plans: &[TargetPlan]) -> Result<(), Error> {
    crate::files::create_dir(dir).map_err(|source| Error::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let path = dir.join("cleanup.json");
    let doc = serde_json::json!({
        "cleanup_id": id,
        "deleted": deleted,
        "summary": summary_line(plans, deleted),
        "targets": plans,
    });
    crate::report::write_atomically(&path, |w| {
        serde_json::to_writer_pretty(&mut *w, &doc).map_err(std::io::Error::other)?;
        writeln!(w)
    })
    .map_err(|source| Error::Write {
        path: path.display().to_string(),
        source,
    })
}

/// `prepatch cleanup`.
pub async fn run(ctx: &Context<'_>, args: &CleanupArgs) -> Result<Outcome, Error> {
    let mut config = ctx.config(&args.select.config)?;
    config.add_inventory(&args.select.inventory)?;
    let journal = Arc::new(Journal::open_or_create(&ctx.journal)?);
    let cloud = connect_aws(args.select.profile.clone(), &config).await;
    let s = &args.select;
    let recorded = args.run.as_ref().and_then(|run| journal.run(run).ok());
    match &recorded {
        // A run's backups: the landing zones it took from the
        // organization then; else the organization now.
        Some(row) => {
            let params: Option<crate::journal::RunParams> = serde_json::from_str(&row.params).ok();
            config.add_recorded(&params.map(|p| p.discovered).unwrap_or_default())?;
        }
        None => {
            super::discover(&mut config, cloud.inner()).await?;
        }
    }
    let names = match &args.run {
        // A run's backups: its own landing zones unless told otherwise.
        Some(run) if s.landing_zones.is_empty() && s.environment.is_none() => {
            let row = recorded.as_ref().ok_or_else(|| {
                Error::Usage(format!(
                    "run {run} is not in the journal {}: name its landing zones with --landing-zones",
                    ctx.journal.display()
                ))
            })?;
            row.landing_zones
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        }
        _ => s.landing_zones.clone(),
    };
    let landing_zones: Vec<LandingZone> =
        super::select_landing_zones(&config, &names, s.environment.clone(), &s.region)?
            .into_iter()
            .map(LandingZone::with_restore_role)
            .collect();
    let id = RunId::generate(Utc::now()).to_string();
    let delete = args.yes && !args.dry_run;
    let lz_names: Vec<String> = landing_zones.iter().map(|l| l.name.clone()).collect();
    let params = serde_json::json!({
        "older_than_days": args.older_than,
        "run": args.run,
        "instances": args.instances,
        "dry_run": args.dry_run,
        "yes": args.yes,
    })
    .to_string();
    let row = NewRun {
        id: &id,
        kind: "cleanup",
        of_run: None,
        landing_zones: &lz_names,
        environment: &environments_of(&landing_zones),
        params: &params,
        simulated: false,
        dry_run: !delete,
    };
    let op = Operation::begin(&journal, &row, &landing_zones, delete)?;
    let dir = ctx.cli.output.output_dir.join(format!("cleanup-{id}"));
    let result = cleanup_with(&cloud, &op, &landing_zones, args, &dir).await;
    op.conclude(&config, "cleanup", result, &dir).await
}

/// The cleanup itself: plan, print, delete when asked, report. Returns how
/// it ended and its one-line summary.
pub(super) async fn cleanup_with<C: Cloud>(
    cloud: &Paced<C>,
    op: &Operation,
    landing_zones: &[LandingZone],
    args: &CleanupArgs,
    dir: &Path,
) -> Result<(Outcome, String), Error> {
    let id = op.id.as_str();
    let delete = args.yes && !args.dry_run;
    let jc = Journaled::new(cloud, &op.journal, id);
    let criterion = match (&args.run, args.older_than) {
        (Some(run), _) => Criterion::Run(run.clone()),
        (None, Some(days)) => Criterion::OlderThan(days),
        (None, None) => Criterion::Expired,
    };
    let due_now = Due {
        criterion: criterion.clone(),
        instances: args.instances.iter().cloned().collect(),
    };
    let now = Utc::now();
    // What the journal says of a run met.
    let witnesses = |run: &str| -> Witnesses {
        op.journal.backup_witnesses(run).unwrap_or_else(|e| {
            tracing::warn!(error = %e, run, "cannot read the journal: AWS's fields decide alone");
            Witnesses::default()
        })
    };
    let session = format!("prepatch-{id}");
    let mut plans = plan(&jc, landing_zones, now, &due_now, &session, &witnesses).await;
    let mut out = crate::console::stdout();
    let w = stdout_error;
    let mut due = match &criterion {
        Criterion::Expired => format!(
            "expired before {}: CreationDate plus the run's retention, or a later prepatch:expires-at",
            now.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        Criterion::OlderThan(d) => format!("made more than {d} days ago, by CreationDate"),
        Criterion::Run(run) => format!("every backup of run {run}"),
    };
    if !args.instances.is_empty() {
        due.push_str(&format!(", of {}", args.instances.join(", ")));
    }
    writeln!(out, "cleanup {id}: prepatch AMIs due ({due}):").map_err(w)?;
    write_plan(&plans, &mut out).map_err(w)?;
    // An instance named that has no backup due anywhere is said so: a
    // typo, or released already.
    let found: BTreeSet<&str> = plans
        .iter()
        .flat_map(|p| &p.amis)
        .map(|a| a.instance_id.as_str())
        .collect();
    for i in args
        .instances
        .iter()
        .filter(|i| !found.contains(i.as_str()))
    {
        writeln!(out, "  {i}: no backup due in these landing zones").map_err(w)?;
    }
    if delete {
        apply_until(&jc, &mut plans, &op.shutdown).await;
        writeln!(out, "done:").map_err(w)?;
        write_plan(&plans, &mut out).map_err(w)?;
    } else if args.dry_run {
        writeln!(out, "dry run: nothing was deleted").map_err(w)?;
    } else {
        writeln!(
            out,
            "nothing was deleted: pass --yes to deregister and delete what is planned"
        )
        .map_err(w)?;
    }
    let line = summary_line(&plans, delete);
    writeln!(out, "cleanup: {line}").map_err(w)?;
    write_report(dir, id, delete, &plans)?;
    writeln!(out, "reports: {}", dir.display()).map_err(w)?;
    let outcome = Outcome {
        failures: totals(&plans).failed > 0,
        interrupted: op.shutdown.requested(),
    };
    Ok((outcome, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("a time")
    }

    #[test]
    fn a_tag_can_keep_a_backup_longer_never_make_it_go_sooner() {
        let created = Some(at("2026-12-01T00:00:00Z"));
        // The run recorded 7 days: a tag moved to the next day is not
        // believed, one moved later is.
        assert_eq!(
            due_at(created, "2026-12-02T00:00:00Z", Some(7)),
            Ok(at("2026-12-08T00:00:00Z"))
        );
        assert_eq!(
            due_at(created, "2026-12-30T00:00:00Z", Some(7)),
            Ok(at("2026-12-30T00:00:00Z"))
        );
        // Without the run's record: the tag stands if it is no earlier than
        // the creation plus the shortest retention, else it is not believed.
        assert_eq!(
            due_at(created, "2026-12-02T00:00:00Z", None),
            Ok(at("2026-12-02T00:00:00Z"))
        );
        let why = due_at(created, "2026-12-01T00:05:00Z", None).unwrap_err();
        assert!(why.contains("not believed"), "{why}");
        // Nothing to measure from, nothing readable: no date.
        assert!(due_at(None, "2026-12-30T00:00:00Z", Some(7)).is_err());
        assert!(due_at(created, "soon", Some(7)).is_err());
    }
}
