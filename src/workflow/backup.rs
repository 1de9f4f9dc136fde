//! Phase 2: one AMI per instance, running or stopped, before anything is
//! started, so a bad boot after patching can be rolled back.
//!
//! Idempotent: before creating, one `DescribeImages` per account-region
//! finds the AMIs tagged with this run (`prepatch:run-id`, disabled ones
//! included); an instance that has one is not backed up again, so a rerun
//! after a crash makes no duplicates. AWS's `InvalidAMIName.Duplicate`
//! means the same. Either way an AMI is adopted only if it is one that
//! prepatch made ([`Image::backup_of`]): the tags say which instance and
//! run to check, AWS's `SourceInstanceId`, the name and the journal decide.
//! A copy with the tags, or anything else, is left alone and reported.
//!
//! `CreateImage` tags the AMI and its snapshots in the same call, so every
//! snapshot carries the run's tags from the moment it exists, whatever
//! happens next (`--no-wait-backup`, a crash). `CreateTags` on snapshots
//! is only a repair, for AMIs adopted from an earlier attempt (which may
//! be from a version that tagged them later).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::poll::Polls;
use super::progress::plural;
use super::{Tally, Workflow};
use crate::cloud::{ImageFilter, ImageRequest};
use crate::model::{
    AmiId, Backup, Failure, Image, ImageState, InstanceId, Record, TagMap, Tags, Target, tag,
};
use crate::model::{Phase, TargetRun};

/// CreateImage calls in flight per account-region. The pacing in
/// `cloud::limit` keeps them inside EC2's rate; this keeps latency hidden.
const CREATES_IN_FLIGHT: usize = 16;

/// The longest gap between two looks at AMIs ([`Polls`]). AMIs take
/// minutes to hours (their snapshots' size): a long wait costs a few calls
/// per account-region and reports the last AMI at most 3 minutes late.
pub const POLL_MAX: Duration = Duration::from_secs(180);

pub use crate::model::ami_name;

/// When AMIs made now in `landing_zone` expire: its environment's
/// `retention_days`, else `ami_backup.retention_days`.
pub(super) fn expiry(wf: &Workflow<'_>, landing_zone: &str) -> DateTime<Utc> {
    wf.clock.now() + chrono::Duration::days(wf.config.retention_days(landing_zone).into())
}

/// Tags shared by everything a run creates.
pub(super) fn run_tags(run_id: &str, landing_zone: &str, expires_at: DateTime<Utc>) -> Tags {
    vec![
        (tag::RUN_ID.into(), run_id.into()),
        (tag::LANDING_ZONE.into(), landing_zone.into()),
        (tag::CREATED_BY.into(), tag::CREATED_BY_VALUE.into()),
        (
            tag::EXPIRES_AT.into(),
            expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    ]
}

/// Phase 2 in one account-region: an AMI per instance, waited on.
pub(super) async fn backup_target(wf: &Workflow<'_>, t: &mut TargetRun) -> Tally {
    if t.records.is_empty() {
        return Tally::default();
    }
    let bar = wf
        .progress
        .bar(Phase::AmiBackup, &t.target, t.records.len() as u64);
    let expires_at = expiry(wf, &t.target.landing_zone);

    // This run's AMIs from an earlier attempt, by instance.
    let existing: BTreeMap<InstanceId, Image> = match own_images(wf, &t.target).await {
        Ok(images) => images,
        Err(e) => {
            // Without this lookup a create could duplicate: touch nothing.
            let failure =
                Failure::from(e).context("cannot look up this run's AMIs, nothing backed up here");
            wf.event(Phase::AmiBackup, &t.target, failure.message());
            for r in &mut t.records {
                r.backup = Some(Backup {
                    error: Some(failure.clone()),
                    ..Backup::default()
                });
            }
            bar.finish("failed");
            return Tally {
                failed: t.records.len(),
                ..Tally::default()
            };
        }
    };

    create_images(wf, t, &existing, expires_at, &bar).await;

    if wf.config.phases.ami_backup.deprecate_at_expiry {
        deprecate_new_images(wf, t, expires_at).await;
    }

    if wf.options.wait_backup {
        wait_for_images(
            wf,
            t,
            wf.config.phases.ami_backup.timeout,
            Repair::Snapshots,
            &bar,
        )
        .await;
    } else {
        repair_adopted_snapshots(wf, t).await;
    }

    let tally = tally_of(t);
    bar.finish(format!("{} AMIs, {} failed", tally.done, tally.failed));
    tally
}

/// A `CreateImage` for each instance without an AMI from an earlier
/// attempt (those are adopted), a few in flight at once.
async fn create_images(
    wf: &Workflow<'_>,
    t: &mut TargetRun,
    existing: &BTreeMap<InstanceId, Image>,
    expires_at: DateTime<Utc>,
    bar: &super::progress::Bar,
) {
    let run_id = wf.options.run_id.as_str();
    // The same for every AMI of the target: made once, not per instance.
    let shared_tags = run_tags(run_id, &t.target.landing_zone, expires_at);
    let mut requests = Vec::new();
    let members = auto_scaling_members(t);
    if !members.is_empty() {
        let choice = if wf.config.phases.ami_backup.auto_scaling_members {
            "backed up like any other (workflow.phases.ami_backup.auto_scaling_members)"
        } else {
            "not backed up (workflow.phases.ami_backup.auto_scaling_members: false)"
        };
        wf.event(
            Phase::AmiBackup,
            &t.target,
            format!(
                "{} belong to Auto Scaling groups ({}): {choice}",
                super::progress::plural(members.values().sum(), "instance"),
                members
                    .iter()
                    .map(|(g, n)| format!("{g}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    for (i, r) in t.records.iter_mut().enumerate() {
        if let (Some(group), false) = (
            r.instance.auto_scaling_group(),
            wf.config.phases.ami_backup.auto_scaling_members,
        ) {
            r.backup = Some(Backup {
                error: Some(Failure::new(format!(
                    "not backed up: it belongs to Auto Scaling group {group:?} (workflow.phases.ami_backup.auto_scaling_members: false)"
                ))),
                ..Backup::default()
            });
            bar.inc(1);
            continue;
        }
        if let Some(image) = existing.get(&r.instance.id) {
            r.backup = Some(Backup {
                ami: Some(image.id.clone()),
                state: Some(image.state),
                created_at: None,
                expires_at: image.tags.get(tag::EXPIRES_AT).and_then(|s| s.parse().ok()),
                snapshot_ids: image.snapshot_ids.to_vec(),
                reused: true,
                ..Backup::default()
            });
            bar.inc(1);
            continue;
        }
        if wf.shutdown.requested() {
            r.backup = Some(Backup {
                error: Some(Failure::new("interrupted before CreateImage")),
                ..Backup::default()
            });
            continue;
        }
        requests.push((i, image_request(wf, r, run_id, &shared_tags)));
    }

    let target = &t.target;
    let deadline = wf.config.phases.ami_backup.timeout;
    let created: Vec<(usize, Result<AmiId, Failure>, DateTime<Utc>)> =
        futures::stream::iter(requests)
            .map(|(i, req)| async move {
                let result = create_one(wf, target, &req, deadline).await;
                bar.inc(1);
                (i, result, wf.clock.now())
            })
            .buffer_unordered(CREATES_IN_FLIGHT)
            .collect()
            .await;

    for (i, result, at) in created {
        let r = &mut t.records[i];
        r.backup = Some(match result {
            Ok(ami) => Backup {
                ami: Some(ami),
                state: Some(ImageState::Pending),
                created_at: Some(at),
                expires_at: Some(expires_at),
                ..Backup::default()
            },
            Err(e) => {
                tracing::warn!(instance = %r.instance.id, error = %e, "CreateImage failed");
                wf.event(
                    Phase::AmiBackup,
                    &r.instance.id,
                    format!("CreateImage failed: {e}"),
                );
                Backup {
                    error: Some(e),
                    ..Backup::default()
                }
            }
        });
    }
}

/// One `CreateImage`, given until `deadline` to go through.
///
/// EC2 refuses it while the instance's volumes have as many snapshots in
/// progress as EBS allows (another backup tool at work on the same volume):
/// that is asked again, later and later, until the deadline, and reported
/// with AWS's reason if it never goes through. AWS refuses a second AMI of
/// the same name: that one is adopted if it is this run's backup of this
/// instance (an earlier attempt's, its answer lost), and refused with the
/// reason if not.
async fn create_one(
    wf: &Workflow<'_>,
    target: &Target,
    req: &ImageRequest,
    deadline: Duration,
) -> Result<AmiId, Failure> {
    let busy = Polls::new(deadline, SNAPSHOTS_BUSY_MAX).first_gap(SNAPSHOTS_BUSY_FIRST);
    loop {
        match wf.cloud.create_image(target, req).await {
            Ok(ami) => return Ok(ami),
            Err(e) if e.code == "InvalidAMIName.Duplicate" => {
                return adopt_duplicate(wf, target, req, e).await;
            }
            Err(e) if snapshots_busy(&e) => {
                tracing::info!(instance = %req.instance, error = %e, "CreateImage refused while the volume's snapshots are in progress; asking again");
                if !busy.wait(&wf.shutdown).await {
                    return Err(Failure::from(e).context(format!(
                        "the instance's volumes still had snapshots in progress after {}s",
                        busy.waited().as_secs()
                    )));
                }
            }
            Err(e) => return Err(Failure::from(e)),
        }
    }
}

/// The first gap, and the longest, between two `CreateImage` calls for an
/// instance whose volumes are busy with snapshots: EBS snapshots take
/// minutes, and EC2 asks for at least 15 seconds between snapshots of a
/// volume.
const SNAPSHOTS_BUSY_FIRST: Duration = Duration::from_secs(15);
const SNAPSHOTS_BUSY_MAX: Duration = Duration::from_secs(120);

/// EC2's refusal of a snapshot because the volume has too many in
/// progress, or had one too recently (EC2 API reference, "Error codes":
/// `ConcurrentSnapshotLimitExceeded`, `SnapshotCreationPerVolumeRateExceeded`).
fn snapshots_busy(e: &crate::cloud::CloudError) -> bool {
    matches!(
        e.code.as_str(),
        "ConcurrentSnapshotLimitExceeded" | "SnapshotCreationPerVolumeRateExceeded"
    )
}

/// How long a just-made AMI may take to show in `DescribeImages`: EC2's
/// API is eventually consistent, and a resource just created may be
/// missing from a describe for a while (EC2 API reference, "Eventual
/// consistency in the Amazon EC2 API").
const VISIBLE_WITHIN: Duration = Duration::from_secs(120);

/// The looks of a wait for a resource just made to become visible:
/// a couple of seconds first, then longer, as EC2's page advises.
fn until_visible() -> Polls {
    Polls::new(VISIBLE_WITHIN, Duration::from_secs(20)).first_gap(Duration::from_secs(2))
}

/// `CreateImage` answered `InvalidAMIName.Duplicate`: the AMI of that
/// name is looked up (again, for [`VISIBLE_WITHIN`], while eventual
/// consistency hides it) and adopted if it is this run's backup of this
/// instance.
async fn adopt_duplicate(
    wf: &Workflow<'_>,
    target: &Target,
    req: &ImageRequest,
    e: crate::cloud::CloudError,
) -> Result<AmiId, Failure> {
    let run_id = wf.options.run_id.as_str();
    let by_name = ImageFilter::Name(req.name.clone());
    let polls = until_visible();
    let found = loop {
        match wf.cloud.describe_images(target, &by_name).await {
            Ok(found) if !found.is_empty() => break found,
            Ok(_) => {}
            Err(e2) => return Err(Failure::from(e).and(format!("looking it up: {e2}"))),
        }
        if !polls.wait(&wf.shutdown).await {
            return Err(Failure::from(e).and(format!(
                "no AMI of that name showed in DescribeImages within {}s",
                polls.waited().as_secs()
            )));
        }
    };
    let image = &found[0];
    match image.backup_of(&target.account, run_id, |id| wf.witnesses.of(id)) {
        Ok(of) if of == req.instance => Ok(image.id.clone()),
        Ok(of) => Err(Failure::from(e).and(format!("it is the backup of {of}"))),
        Err(why) => Err(Failure::from(e).and(format!("{} is left alone: {why}", image.id))),
    }
}

/// The Auto Scaling groups among a target's instances, with how many of
/// them each has.
fn auto_scaling_members(t: &TargetRun) -> BTreeMap<String, usize> {
    let mut groups = BTreeMap::new();
    for r in &t.records {
        if let Some(g) = r.instance.auto_scaling_group() {
            *groups.entry(g.to_owned()).or_insert(0) += 1;
        }
    }
    groups
}

/// The phase's counts for a target: an AMI that exists is done.
fn tally_of(t: &TargetRun) -> Tally {
    let mut tally = Tally::default();
    for r in &t.records {
        match &r.backup {
            Some(b) if b.failed() => tally.failed += 1,
            Some(_) => tally.done += 1,
            None => tally.skipped += 1,
        }
    }
    tally
}

/// `ami_backup.deprecate_at_expiry`: EC2 image deprecation at the AMIs'
/// expiry, one `EnableImageDeprecation` per AMI made now. A refusal is
/// logged and reported, not a failed backup: the AMI is there.
async fn deprecate_new_images(wf: &Workflow<'_>, t: &TargetRun, expires_at: DateTime<Utc>) {
    for r in &t.records {
        let Some(ami) = r
            .backup
            .as_ref()
            .filter(|b| !b.reused)
            .and_then(|b| b.ami.as_ref())
        else {
            continue;
        };
        if let Err(e) = deprecate(wf, &t.target, ami, expires_at).await {
            tracing::warn!(%ami, error = %e, "setting the AMI's deprecation failed");
            wf.event(
                Phase::AmiBackup,
                &r.instance.id,
                format!("setting deprecation on {ami} failed: {e}"),
            );
        }
    }
}

/// One `EnableImageDeprecation`, asked again while the AMI just made is
/// not visible yet (`InvalidAMIID.NotFound`, eventual consistency) for
/// [`VISIBLE_WITHIN`].
async fn deprecate(
    wf: &Workflow<'_>,
    target: &Target,
    ami: &AmiId,
    at: DateTime<Utc>,
) -> Result<(), crate::cloud::CloudError> {
    let polls = until_visible();
    loop {
        match wf.cloud.enable_image_deprecation(target, ami, at).await {
            Err(e) if e.code == "InvalidAMIID.NotFound" && polls.wait(&wf.shutdown).await => {
                tracing::debug!(%ami, "not visible yet; asking again");
            }
            other => return other,
        }
    }
}

/// The AMIs tagged with this run in a target that are its backups, by
/// instance (one `DescribeImages`, disabled AMIs included). Any other AMI
/// carrying the run's tags (a copy, a forgery) is left alone, with an event
/// saying why.
pub(super) async fn own_images(
    wf: &Workflow<'_>,
    target: &crate::model::Target,
) -> Result<BTreeMap<InstanceId, Image>, crate::cloud::CloudError> {
    let run_id = wf.options.run_id.as_str();
    let mine = ImageFilter::Tag(tag::RUN_ID.into(), run_id.into());
    let mut own = BTreeMap::new();
    for image in wf.cloud.describe_images(target, &mine).await? {
        match image.backup_of(&target.account, run_id, |id| wf.witnesses.of(id)) {
            Ok(instance) => {
                own.insert(instance, image);
            }
            Err(why) => wf.event(
                Phase::AmiBackup,
                target,
                format!("LEFT ALONE {}: {why}", image.id),
            ),
        }
    }
    Ok(own)
}

/// The request for one instance's backup; the dry run's permission check
/// sends the same.
pub(super) fn image_request(
    wf: &Workflow<'_>,
    r: &Record,
    run_id: &str,
    shared_tags: &Tags,
) -> ImageRequest {
    let id = r.instance.id.as_str();
    let name = ami_name(id, run_id);
    let label = r
        .instance
        .name()
        .map(|n| format!(" ({})", truncate(n, 100)))
        .unwrap_or_default();
    // The team's tags first: prepatch's own keys are never among them
    // (refused at load), and prepatch's would win if they were.
    let team = &wf.config.phases.ami_backup.tags;
    let tags: TagMap = team
        .iter()
        .chain(shared_tags)
        .cloned()
        .chain([
            (tag::INSTANCE_ID.into(), id.into()),
            ("Name".into(), name.clone()),
        ])
        .collect();
    let snapshot_tags: TagMap = team
        .iter()
        .chain(shared_tags)
        .cloned()
        .chain([(tag::INSTANCE_ID.into(), id.into())])
        .collect();
    ImageRequest {
        instance: r.instance.id.clone(),
        snapshot_tags,
        name,
        // AMI descriptions are at most 255 characters.
        description: truncate(
            &format!("prepatch backup of {id}{label}, run {run_id}"),
            255,
        )
        .to_owned(),
        no_reboot: wf.config.phases.ami_backup.no_reboot,
        tags,
    }
}

/// At most `n` characters of `s`, cut at a character boundary.
fn truncate(s: &str, n: usize) -> &str {
    if s.len() <= n {
        // No more bytes than `n`, so no more characters.
        return s;
    }
    match s.char_indices().nth(n) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// Whether a wait for AMIs may repair the tags of adopted AMIs' snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Repair {
    /// The backup phase: it holds the lock and the prod confirmation.
    Snapshots,
    /// Validation: it only reads.
    Nothing,
}

/// Polls this run's AMIs in a target (one `DescribeImages` per poll) until
/// none is pending or `timeout` passes. Used by the backup phase (which
/// also repairs adopted AMIs' snapshot tags as their snapshots appear), and
/// by validation when the backup did not wait.
pub(super) async fn wait_for_images(
    wf: &Workflow<'_>,
    t: &mut TargetRun,
    timeout: Duration,
    repair: Repair,
    bar: &super::progress::Bar,
) {
    let run_id = wf.options.run_id.as_str();
    let mine = ImageFilter::Tag(tag::RUN_ID.into(), run_id.into());
    // Waited on since the oldest AMI still out was asked for: with a
    // thousand to create, EC2's bucket spreads the CreateImage calls over
    // three minutes, and the first AMIs are that far along.
    let oldest = t
        .records
        .iter()
        .filter(|r| is_pending(r))
        .filter_map(|r| r.backup.as_ref()?.created_at)
        .min();
    let mut polls = Polls::new(timeout, POLL_MAX);
    if let Some(oldest) = oldest {
        let waited = (wf.clock.now() - oldest).to_std().unwrap_or_default();
        let now = tokio::time::Instant::now();
        polls = polls.waited_since(now.checked_sub(waited).unwrap_or(now));
    }
    // The records still waiting on their AMI (pending, or snapshots not
    // known yet), by AMI: a poll's answer only touches these, so a long
    // wait costs the AMIs still out, not the whole account-region.
    let mut waiting: HashMap<AmiId, usize> = t
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| is_pending(r) || !snapshots_known(r))
        .filter_map(|(i, r)| Some((r.backup.as_ref()?.ami.clone()?, i)))
        .collect();
    if repair == Repair::Snapshots {
        repair_adopted_snapshots(wf, t).await;
    }
    while !waiting.is_empty() {
        match wf.cloud.describe_images(&t.target, &mine).await {
            Ok(images) => {
                let now = wf.clock.now();
                let mut new_snapshots = Vec::new();
                for image in images {
                    let Some(&i) = waiting.get(&image.id) else {
                        continue;
                    };
                    let r = &mut t.records[i];
                    seen(wf, r, &image, repair, &mut new_snapshots, now);
                    if !is_pending(r) && snapshots_known(r) {
                        waiting.remove(&image.id);
                    }
                }
                if !new_snapshots.is_empty() {
                    tag_snapshots(wf, t, &new_snapshots).await;
                }
            }
            Err(e) => {
                tracing::warn!(target_ = %t.target, error = %e, "DescribeImages failed; will poll again");
            }
        }
        // Snapshots that never show (an AMI that failed early) are no
        // reason to keep polling once nothing is pending.
        let pending = t.records.iter().filter(|r| is_pending(r)).count();
        if pending == 0 {
            break;
        }
        if polls.expired() {
            time_out_pending(t, timeout);
            break;
        }
        bar.waiting(&plural(pending, "AMI"), polls.waited());
        if !polls.wait(&wf.shutdown).await {
            break;
        }
    }
}

/// What one answer says of a record's AMI: its state (and when it
/// ended), its snapshots; an adopted AMI's snapshots go to `new_snapshots`
/// for their tags' repair.
fn seen(
    wf: &Workflow<'_>,
    r: &mut Record,
    image: &Image,
    repair: Repair,
    new_snapshots: &mut Vec<String>,
    now: DateTime<Utc>,
) {
    let Some(b) = r.backup.as_mut() else { return };
    if b.state == Some(ImageState::Pending) && image.state.is_final() {
        b.completed_at = Some(now);
        if image.state != ImageState::Available {
            let reason = image.state_reason.as_deref().unwrap_or("no reason given");
            b.error = Some(Failure::new(format!("AMI {}: {reason}", image.state)));
            wf.event(
                Phase::AmiBackup,
                &r.instance.id,
                format!("AMI {} {}: {reason}", image.id, image.state),
            );
        }
    }
    b.state = Some(image.state);
    if b.snapshot_ids.is_empty() && !image.snapshot_ids.is_empty() {
        // A new AMI's snapshots were tagged by CreateImage;
        // an adopted one's may not have been.
        if b.reused && repair == Repair::Snapshots {
            new_snapshots.extend(image.snapshot_ids.iter().cloned());
        }
        b.snapshot_ids = image.snapshot_ids.to_vec();
    }
}

/// Every AMI still pending at the deadline fails the backup.
fn time_out_pending(t: &mut TargetRun, timeout: Duration) {
    for r in &mut t.records {
        if let Some(b) = r
            .backup
            .as_mut()
            .filter(|b| b.state == Some(ImageState::Pending))
        {
            b.error = Some(Failure::new(format!(
                "pending after {}s",
                timeout.as_secs()
            )));
        }
    }
}

fn is_pending(r: &Record) -> bool {
    r.backup
        .as_ref()
        .is_some_and(|b| b.state == Some(ImageState::Pending))
}

/// An AMI whose snapshots have not been read yet (pending ones may list none).
fn snapshots_known(r: &Record) -> bool {
    r.backup
        .as_ref()
        .is_none_or(|b| b.ami.is_none() || !b.snapshot_ids.is_empty())
}

/// AMIs adopted from an earlier attempt: that attempt may have been made
/// by a version that tagged snapshots after the AMI, and stopped before it
/// did (tagging again changes nothing). Snapshots not known yet are tagged
/// by the wait when they appear.
async fn repair_adopted_snapshots(wf: &Workflow<'_>, t: &TargetRun) {
    let adopted: Vec<String> = t
        .records
        .iter()
        .filter_map(|r| r.backup.as_ref().filter(|b| b.reused))
        .flat_map(|b| b.snapshot_ids.iter().cloned())
        .collect();
    if !adopted.is_empty() {
        tag_snapshots(wf, t, &adopted).await;
    }
}

/// Tags the snapshots among `snapshots` that do not carry the run's tags
/// yet (one `DescribeSnapshots` says which do), one `CreateTags` per 1000.
/// The shipped run policy allows snapshot tags only inside `CreateImage`:
/// a repair it refuses is reported, and changes nothing.
async fn tag_snapshots(wf: &Workflow<'_>, t: &TargetRun, snapshots: &[String]) {
    let run_id = wf.options.run_id.as_str();
    let tagged: std::collections::HashSet<String> = match wf
        .cloud
        .describe_snapshots(&t.target, tag::RUN_ID, run_id)
        .await
    {
        Ok(found) => found.into_iter().map(|s| s.id).collect(),
        Err(e) => {
            tracing::warn!(target_ = %t.target, error = %e, "DescribeSnapshots failed; repairing every adopted snapshot's tags");
            Default::default()
        }
    };
    let snapshots: Vec<String> = snapshots
        .iter()
        .filter(|s| !tagged.contains(*s))
        .cloned()
        .collect();
    if snapshots.is_empty() {
        return;
    }
    let expires_at = t
        .records
        .iter()
        .find_map(|r| r.backup.as_ref()?.expires_at)
        .unwrap_or_else(|| wf.clock.now());
    let tags = run_tags(
        wf.options.run_id.as_str(),
        &t.target.landing_zone,
        expires_at,
    );
    for chunk in snapshots.chunks(1000) {
        if let Err(e) = wf.cloud.create_tags(&t.target, chunk, &tags).await {
            tracing::warn!(target_ = %t.target, error = %e, "tagging snapshots failed");
            wf.event(
                Phase::AmiBackup,
                &t.target,
                format!("tagging {} snapshots failed: {e}", chunk.len()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_names_keep_to_ami_characters() {
        assert_eq!(
            ami_name("i-0abc", "20261130T041500Z-1a2b"),
            "prepatch-i-0abc-20261130T041500Z-1a2b"
        );
        assert!(ami_name("i-1", &"x".repeat(200)).len() <= 128);
        assert_eq!(ami_name("i-1", "a:b"), "prepatch-i-1-ab");
    }

    #[test]
    fn descriptions_are_cut_at_a_character() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("", 3), "");
    }
}
