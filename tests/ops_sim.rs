//! The journal, restore and cleanup on the simulated cloud with paused
//! time: what moto cannot show (instances that take a while to stop, a
//! `CreateImage` whose outcome is in the journal, age from the run id).
//! Test names end in `_sim`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use prepatch::cloud::limit::Paced;
use prepatch::cloud::sim::{Agent, SimCloud};
use prepatch::cloud::{Api, Cloud, ImageRequest};
use prepatch::commands::{cleanup, restore};
use prepatch::config::Config;
use prepatch::journal::{Journal, Journaled, NewRun};
use prepatch::model::Run;
use prepatch::model::{
    AccountId, Instance, InstanceId, InstanceState, Platform, Region, RunId, Target, tag,
};
use prepatch::workflow::{Clock, Confirmation, Options, Shutdown, Workflow, progress::Progress};

const CONFIG: &str = "
aws: {regions: [us-east-1]}
landing_zones:
  - {name: app-nonprod, account_id: \"111111111111\", environment: nonprod}
";

fn config() -> Config {
    Config::parse(CONFIG, Path::new("test.yml")).expect("test config")
}

fn account() -> AccountId {
    "111111111111".parse().expect("account")
}

fn region() -> Region {
    "us-east-1".parse().expect("region")
}

fn target() -> Target {
    Target {
        landing_zone: "app-nonprod".into(),
        account: account(),
        region: region(),
    }
}

fn add(sim: &SimCloud, n: u64, state: InstanceState) -> InstanceId {
    let id = InstanceId::new(format!("i-0{n:016x}"));
    sim.add_instance(
        &account(),
        &region(),
        Instance {
            id: id.clone(),
            state,
            platform: Platform::Linux,
            instance_type: "t3.small".into(),
            private_ip: None,
            launch_time: None,
            tags: std::iter::once(("Name".into(), format!("srv-{n}"))).collect(),
        },
        Agent::Healthy,
    );
    id
}

fn journal(dir: &tempfile::TempDir, run_id: &str) -> Journal {
    let j = Journal::open_or_create(&dir.path().join("prepatch.db")).expect("journal");
    j.begin(&NewRun {
        id: run_id,
        kind: "run",
        of_run: None,
        landing_zones: &["app-nonprod".to_owned()],
        environment: "nonprod",
        params: "{}",
        simulated: true,
        dry_run: false,
    })
    .expect("begin");
    j
}

async fn run_journaled(cloud: &dyn Cloud, config: &Config, run_id: &str) -> Run {
    let options = Options {
        run_id: run_id.parse::<RunId>().expect("run id"),
        plans: BTreeMap::new(),
        dry_run: false,
        assume_yes: false,
        wait_backup: true,
        interactive: false,
        show_progress: false,
    };
    let wf = Workflow {
        events: Default::default(),
        cloud,
        config,
        options: &options,
        clock: Clock::start(chrono::Utc::now()),
        shutdown: Shutdown::never(),
        progress: Progress::hidden(),
        witnesses: Default::default(),
    };
    let lzs: Vec<_> = config.landing_zones.iter().collect();
    let mut no_checkpoint = |_: &Run| {};
    let mut refuse = |what: &str| Confirmation::No(what.to_owned());
    wf.run(&lzs, &mut no_checkpoint, &mut refuse)
        .await
        .expect("the workflow runs")
}

#[tokio::test(start_paused = true)]
async fn restore_stops_what_the_journaled_run_started_and_waits_for_stopped_sim() {
    let config = config();
    let sim = SimCloud::empty().without_throttling();
    let running = add(&sim, 1, InstanceState::Running);
    let stopped: Vec<InstanceId> = (2..=5)
        .map(|n| add(&sim, n, InstanceState::Stopped))
        .collect();
    let cloud = Paced::new(sim);
    let dir = tempfile::tempdir().expect("tmp");
    let j = journal(&dir, "run-1");
    let journaled = Journaled::new(&cloud, &j, "run-1");
    let run = run_journaled(&journaled, &config, "run-1").await;
    assert_eq!(
        run.records()
            .filter(|r| r.start.as_ref().is_some_and(|s| s.started_by_run))
            .count(),
        4
    );
    // The journal has the starts, through the Journaled cloud alone, and
    // the run the LaunchTimes it saw after them (as restore reads both).
    let started = j
        .started_instances("run-1")
        .expect("started")
        .with_launch_times(&run);
    let mut in_journal = started
        .by_target
        .values()
        .flatten()
        .cloned()
        .collect::<Vec<_>>();
    in_journal.sort();
    assert_eq!(in_journal, stopped);

    // Someone re-tags one; another is tagged by this run but never started by it.
    let sim = cloud.inner();
    sim.set_instance_tag(&account(), &region(), &stopped[0], tag::STARTED_BY, "run-2");
    sim.set_instance_tag(&account(), &region(), &running, tag::STARTED_BY, "run-1");

    let lzs = config.landing_zones.clone();
    let mut plans = restore::plan(&cloud, &lzs, &started, "run-1", "s").await;
    let before = tokio::time::Instant::now();
    restore::apply(&cloud, &mut plans, "run-1", Duration::from_secs(600)).await;
    assert!(
        before.elapsed() >= Duration::from_secs(20),
        "stopping takes time in the simulation, and restore waited for it"
    );
    let line = restore::summary_line(&plans, false);
    assert_eq!(
        line,
        "stopped 3, already stopped 0, left alone 2, failed 0, account-regions failed 0"
    );
    let now: BTreeMap<InstanceId, Instance> = sim
        .instances(&account(), &region())
        .into_iter()
        .map(|i| (i.id.clone(), i))
        .collect();
    for id in &stopped[1..] {
        assert_eq!(now[id].state, InstanceState::Stopped, "{id}");
        assert_eq!(now[id].tag(tag::STARTED_BY), None, "{id}: tag removed");
    }
    assert_eq!(now[&stopped[0]].state, InstanceState::Running);
    assert_eq!(now[&stopped[0]].tag(tag::STARTED_BY), Some("run-2"));
    assert_eq!(now[&running].state, InstanceState::Running);
    let stops: Vec<_> = sim
        .mutation_log()
        .into_iter()
        .filter(|(api, _)| *api == Api::StopInstances)
        .collect();
    assert_eq!(stops.len(), 3, "one StopInstances naming 3 instances");

    // A second restore finds nothing more to stop.
    let mut again = restore::plan(&cloud, &lzs, &started, "run-1", "s").await;
    restore::apply(&cloud, &mut again, "run-1", Duration::from_secs(600)).await;
    assert!(
        restore::summary_line(&again, false).starts_with("stopped 0,"),
        "{}",
        restore::summary_line(&again, false)
    );
}

#[tokio::test(start_paused = true)]
async fn a_create_image_the_journal_has_is_not_sent_again_sim() {
    let sim = SimCloud::empty().without_throttling();
    let id = add(&sim, 1, InstanceState::Running);
    let cloud = Paced::new(sim);
    let dir = tempfile::tempdir().expect("tmp");
    let j = journal(&dir, "run-1");
    let journaled = Journaled::new(&cloud, &j, "run-1");
    let req = ImageRequest {
        instance: id.clone(),
        name: "prepatch-a".into(),
        description: String::new(),
        no_reboot: true,
        tags: [(tag::RUN_ID.into(), "run-1".into())].into_iter().collect(),
        snapshot_tags: Default::default(),
    };
    let first = journaled.create_image(&target(), &req).await.expect("made");
    // Asked again by the next attempt (a resume whose tag lookup missed
    // it): the journal's AMI.
    let journaled = Journaled::new(&cloud, &j, "run-1");
    let second = journaled
        .create_image(&target(), &req)
        .await
        .expect("from the journal");
    assert_eq!(first, second);
    let creates = cloud
        .inner()
        .mutation_log()
        .into_iter()
        .filter(|(api, _)| *api == Api::CreateImage)
        .count();
    assert_eq!(creates, 1);
    let steps = j.steps("run-1").expect("steps");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, "ok");
    assert_eq!(steps[0].result.as_deref(), Some(first.as_str()));

    // The AMI is gone (deregistered by someone): the journal does not stop
    // a new backup.
    cloud
        .deregister_image(&target(), &first)
        .await
        .expect("deregister");
    let journaled = Journaled::new(&cloud, &j, "run-1");
    let third = journaled
        .create_image(&target(), &req)
        .await
        .expect("made again");
    assert_ne!(third, first);
}

async fn image(
    cloud: &dyn Cloud,
    id: &InstanceId,
    run_id: &str,
    expires: &str,
    by: &str,
) -> String {
    // A backup as prepatch makes it: its name, the instance's tag.
    let req = ImageRequest {
        instance: id.clone(),
        name: prepatch::model::ami_name(id.as_str(), run_id),
        description: String::new(),
        no_reboot: true,
        tags: [
            (tag::RUN_ID.into(), run_id.into()),
            (tag::CREATED_BY.into(), by.into()),
            (tag::EXPIRES_AT.into(), expires.into()),
            (tag::INSTANCE_ID.into(), id.as_str().into()),
        ]
        .into_iter()
        .collect(),
        snapshot_tags: Default::default(),
    };
    cloud
        .create_image(&target(), &req)
        .await
        .expect("image")
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn cleanup_keeps_untagged_snapshots_and_reads_age_from_creation_sim() {
    let config = config();
    let sim = SimCloud::empty().without_throttling();
    let ids: Vec<InstanceId> = (1..=4)
        .map(|n| add(&sim, n, InstanceState::Running))
        .collect();
    let cloud = Paced::new(sim);
    let past = "2020-01-02T00:00:00Z";
    let future = "2999-01-01T00:00:00Z";
    let expired = image(&cloud, &ids[0], "20200101T000000Z-aaaa", past, "prepatch").await;
    let snapless = image(&cloud, &ids[1], "20200101T000000Z-aaaa", past, "prepatch").await;
    let old_unexpired = image(&cloud, &ids[2], "20200101T000000Z-bbbb", future, "prepatch").await;
    let named_run = image(&cloud, &ids[3], "my-run", future, "prepatch").await;
    // Backups of long ago are long available (a pending one is left for
    // a later cleanup, its snapshots not all listed yet).
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let snapshot_of = |ami: &str| {
        cloud
            .inner()
            .images(&account(), &region())
            .into_iter()
            .find(|i| i.id.as_str() == ami)
            .map(|i| i.snapshot_ids[0].clone())
            .expect("snapshot")
    };
    // prepatch tags the snapshots it makes; one of these is left untagged.
    let tagged = snapshot_of(&expired);
    let untagged = snapshot_of(&snapless);
    cloud
        .create_tags(
            &target(),
            std::slice::from_ref(&tagged),
            &vec![(tag::CREATED_BY.into(), tag::CREATED_BY_VALUE.into())],
        )
        .await
        .expect("tag");
    cloud
        .create_tags(
            &target(),
            std::slice::from_ref(&untagged),
            &vec![("Owner".into(), "x".into())],
        )
        .await
        .expect("tag");

    let lzs = config.landing_zones.clone();
    // Age is AWS's CreationDate, whatever the run id says: the 2020 run
    // ids are not due at 29 days, all four are at 31.
    let made = chrono::Utc::now();
    for (days, count) in [(29, 0), (31, 4)] {
        let plans = cleanup::plan(
            &cloud,
            &lzs,
            made + chrono::Duration::days(days),
            &cleanup::Criterion::OlderThan(30).into(),
            "s",
            &|_| Default::default(),
        )
        .await;
        assert_eq!(
            plans[0].amis.len(),
            count,
            "{days} days: {:?}",
            plans[0].amis
        );
    }

    // Expiry: a week recorded by the journal's runs; their tags in 2020
    // are earlier than that and only the week counts.
    let now = made + chrono::Duration::days(8);
    let week = |_: &str| prepatch::model::Witnesses {
        retention: [("app-nonprod".to_owned(), 7)].into_iter().collect(),
        ..Default::default()
    };

    let early = cleanup::plan(
        &cloud,
        &lzs,
        made + chrono::Duration::days(6),
        &cleanup::Criterion::Expired.into(),
        "s",
        &week,
    )
    .await;
    assert!(early[0].amis.is_empty(), "{:?}", early[0].amis);
    let mut plans = cleanup::plan(
        &cloud,
        &lzs,
        now,
        &cleanup::Criterion::Expired.into(),
        "s",
        &week,
    )
    .await;
    let due: Vec<&str> = plans[0].amis.iter().map(|a| a.ami.as_str()).collect();
    assert_eq!(due, {
        let mut d = vec![expired.as_str(), snapless.as_str()];
        d.sort();
        d
    });
    assert_eq!(plans[0].kept, 2);
    cleanup::apply(&cloud, &mut plans).await;
    let t = cleanup::totals(&plans);
    assert_eq!(
        (
            t.amis_deleted,
            t.snapshots_deleted,
            t.snapshots_kept,
            t.failed
        ),
        (2, 1, 1, 0)
    );
    let left: Vec<String> = cloud
        .inner()
        .images(&account(), &region())
        .into_iter()
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&old_unexpired) && left.contains(&named_run));
    let snaps = cloud.inner().snapshot_ids(&account(), &region());
    assert!(!snaps.contains(&tagged), "the tagged snapshot is deleted");
    assert!(snaps.contains(&untagged), "the untagged one is kept");
    let calls = cloud.api_calls().snapshot();
    assert_eq!(
        calls[&Api::DescribeImages].calls,
        4,
        "one per target per plan"
    );
    assert_eq!(calls[&Api::DeregisterImage].calls, 2);
    assert_eq!(calls[&Api::DeleteSnapshot].calls, 1);
}

#[tokio::test(start_paused = true)]
async fn deprecation_at_expiry_is_set_on_each_new_ami_when_asked_sim() {
    let config = Config::parse(
        &format!("{CONFIG}workflow: {{phases: {{ami_backup: {{deprecate_at_expiry: true}}}}}}\n"),
        Path::new("test.yml"),
    )
    .expect("config");
    assert!(config.phases.ami_backup.deprecate_at_expiry);
    let sim = SimCloud::empty().without_throttling();
    for n in 1..=3 {
        add(&sim, n, InstanceState::Running);
    }
    let cloud = Paced::new(sim);
    let dir = tempfile::tempdir().expect("tmp");
    let j = journal(&dir, "run-1");
    let journaled = Journaled::new(&cloud, &j, "run-1");
    let run = run_journaled(&journaled, &config, "run-1").await;
    let amis: Vec<String> = run
        .records()
        .filter_map(|r| Some(r.backup.as_ref()?.ami.as_ref()?.to_string()))
        .collect();
    assert_eq!(amis.len(), 3);
    let mut deprecated: Vec<String> = cloud
        .inner()
        .mutation_log()
        .into_iter()
        .filter(|(api, _)| *api == Api::EnableImageDeprecation)
        .map(|(_, ami)| ami)
        .collect();
    deprecated.sort();
    let mut want = amis.clone();
    want.sort();
    assert_eq!(deprecated, want);
    let journaled_steps = j
        .steps("run-1")
        .expect("steps")
        .into_iter()
        .filter(|s| s.action == "EnableImageDeprecation" && s.status == "ok")
        .count();
    assert_eq!(journaled_steps, 3);

    // Off by default: no call.
    let sim = SimCloud::empty().without_throttling();
    add(&sim, 9, InstanceState::Running);
    let cloud = Paced::new(sim);
    run_journaled(&cloud, &self::config(), "run-2").await;
    assert!(
        !cloud
            .inner()
            .mutation_log()
            .iter()
            .any(|(api, _)| *api == Api::EnableImageDeprecation)
    );
}

/// The simulator answers a run's AMIs from an index of the run-id tag: it
/// must say what a look at every AMI would, whatever happened to the tag.
#[tokio::test(start_paused = true)]
async fn amis_by_run_id_follow_their_tags_and_deregistration_sim() {
    use prepatch::cloud::ImageFilter;
    use prepatch::model::AmiId;
    let sim = SimCloud::empty();
    let ids: Vec<InstanceId> = (0..4)
        .map(|n| add(&sim, n, InstanceState::Running))
        .collect();
    let mut amis = Vec::new();
    for id in &ids {
        amis.push(AmiId::new(
            image(&sim, id, "run-a", "2026-01-01T00:00:00Z", "prepatch").await,
        ));
    }
    let t = target();
    let by_run = |run: &'static str| {
        let sim = &sim;
        let t = &t;
        async move {
            let mut got: Vec<String> = sim
                .describe_images(t, &ImageFilter::Tag(tag::RUN_ID.into(), run.into()))
                .await
                .expect("describe")
                .into_iter()
                .map(|i| i.id.to_string())
                .collect();
            got.sort();
            got
        }
    };
    let scan = |run: &str| {
        let mut want: Vec<String> = sim
            .images(&account(), &region())
            .into_iter()
            .filter(|i| i.tags.get(tag::RUN_ID).map(String::as_str) == Some(run))
            .map(|i| i.id.to_string())
            .collect();
        want.sort();
        want
    };
    assert_eq!(by_run("run-a").await.len(), 4);
    // Re-tagged to another run, by hand and by CreateTags.
    sim.set_image_tag(&account(), &region(), &amis[0], tag::RUN_ID, "run-b");
    sim.create_tags(
        &t,
        &[amis[1].to_string()],
        &vec![(tag::RUN_ID.into(), "run-b".into())],
    )
    .await
    .expect("tag");
    // The tag taken off, and an AMI gone.
    sim.delete_tags(
        &t,
        &[amis[2].to_string()],
        &vec![(tag::RUN_ID.into(), String::new())],
    )
    .await
    .expect("untag");
    sim.deregister_image(&t, &amis[3])
        .await
        .expect("deregister");
    for run in ["run-a", "run-b"] {
        assert_eq!(by_run(run).await, scan(run), "{run}");
    }
    assert_eq!(by_run("run-a").await, Vec::<String>::new());
    assert_eq!(by_run("run-b").await.len(), 2);
}

/// `rollback` on the simulated cloud: each instance's root volume comes
/// back from its own backup of the run; an instance the patch broke is
/// READY again; a failed task is reported and the others complete; run
/// again, it makes no second task for what was rolled back, and tries a
/// failed one anew.
#[tokio::test(start_paused = true)]
async fn rollback_uses_each_instances_own_backup_and_is_not_made_twice_sim() {
    use prepatch::cloud::sim::Fault;
    use prepatch::commands::rollback;
    use prepatch::model::rollback::{Action, Verdict};

    let config = config();
    let sim = SimCloud::empty().without_throttling();
    let ids: Vec<InstanceId> = (1..=4)
        .map(|n| add(&sim, n, InstanceState::Running))
        .collect();
    // The patch broke the agent of the second.
    sim.fault(Fault::SsmNeverOnline(ids[1].clone()));
    sim.fault(Fault::RollbackFailed(ids[2].clone()));
    let cloud = Paced::new(sim);
    let dir = tempfile::tempdir().expect("tmp");
    let j = journal(&dir, "run-1");
    let journaled = Journaled::new(&cloud, &j, "run-1");
    let run = run_journaled(&journaled, &config, "run-1").await;
    let backup_of: BTreeMap<String, String> = run
        .records()
        .filter_map(|r| {
            Some((
                r.instance.id.to_string(),
                r.backup.as_ref()?.ami.as_ref()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(backup_of.len(), 4, "a backup of each");

    let witnesses = j.backup_witnesses("run-1").expect("witnesses");
    let wanted = rollback::Wanted {
        instances: ids[..3].iter().map(|i| i.to_string()).collect(),
    };
    let settings = rollback::Settings {
        start: false,
        delete_replaced: false,
        start_timeout: Duration::from_secs(600),
        check_timeout: Duration::from_secs(600),
    };
    let lzs = config.landing_zones.clone();
    j.begin(&NewRun {
        id: "rollback-1",
        kind: "rollback",
        of_run: Some("run-1"),
        landing_zones: &["app-nonprod".to_owned()],
        environment: "nonprod",
        params: "{}",
        simulated: true,
        dry_run: false,
    })
    .expect("begin");
    let rb = Journaled::new(&cloud, &j, "rollback-1");
    let mut plans = rollback::plan(&rb, &lzs, "run-1", &witnesses, &wanted, false, "s").await;
    let rows = &plans[0].rows;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in rows {
        assert_eq!(r.action, Action::WouldRollBack, "{r:?}");
        assert_eq!(r.ami, backup_of[&r.instance_id], "its own backup");
    }
    rollback::apply_until(&rb, &mut plans, "run-1", &settings, &Shutdown::never()).await;
    let by_id: BTreeMap<&str, &prepatch::model::rollback::Row> = plans[0]
        .rows
        .iter()
        .map(|r| (r.instance_id.as_str(), r))
        .collect();
    for i in [&ids[0], &ids[1]] {
        let r = by_id[i.as_str()];
        assert_eq!(
            (r.action, r.verdict),
            (Action::RolledBack, Verdict::Ready),
            "{r:?}"
        );
        assert_eq!(r.task_state, "succeeded");
    }
    let failed = by_id[ids[2].as_str()];
    assert_eq!(failed.action, Action::Failed, "{failed:?}");
    assert!(failed.reason.contains("failed"), "{failed:?}");
    let line = rollback::summary_line(&plans, true);
    assert!(
        line.starts_with("rolled back 2 (2 READY, 0 NOT READY), failed 1"),
        "{line}"
    );
    let tasks = |cloud: &Paced<SimCloud>| {
        cloud
            .inner()
            .mutation_log()
            .into_iter()
            .filter(|(api, _)| *api == Api::CreateReplaceRootVolumeTask)
            .map(|(_, id)| id)
            .collect::<Vec<_>>()
    };
    assert_eq!(tasks(&cloud).len(), 3);

    // Run again: the two done are found done, the failed one is tried anew.
    let mut again = rollback::plan(&rb, &lzs, "run-1", &witnesses, &wanted, false, "s").await;
    let actions: Vec<Action> = again[0].rows.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            Action::RolledBack,
            Action::RolledBack,
            Action::WouldRollBack
        ]
    );
    rollback::apply_until(&rb, &mut again, "run-1", &settings, &Shutdown::never()).await;
    let made = tasks(&cloud);
    assert_eq!(made.len(), 4, "one new task, for the failed one: {made:?}");
    assert_eq!(made[3], ids[2].to_string());
}
