//! The workflow on the simulated cloud (SimCloud) with paused time: each
//! fault ends as promised, nothing is backed up twice, nothing is started
//! before its backup, and calls scale with account-regions, not instances.
//! Test names end in `_sim`: these faults cannot be produced on moto.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use prepatch::cloud::limit::Paced;
use prepatch::cloud::sim::{Agent, Fault, SimCloud};
use prepatch::cloud::{Api, Cloud};
use prepatch::config::Config;
use prepatch::model::Run;
use prepatch::model::{
    AccountId, Instance, InstanceId, InstanceState, Platform, Record, Region, RunId,
};
use prepatch::workflow::{Clock, Confirmation, Options, Shutdown, Workflow, progress::Progress};

const CONFIG: &str = "
aws: {regions: [us-east-1, eu-west-1]}
landing_zones:
  - {name: app-nonprod, account_id: \"111111111111\", environment: nonprod}
  - {name: data-nonprod, account_id: \"222222222222\", environment: nonprod}
";

fn config() -> Config {
    Config::parse(CONFIG, Path::new("test.yml")).expect("test config")
}

fn options(run_id: &str) -> Options {
    Options {
        run_id: run_id.parse::<RunId>().expect("run id"),
        plans: BTreeMap::new(),
        dry_run: false,
        assume_yes: false,
        wait_backup: true,
        interactive: false,
        show_progress: false,
    }
}

/// `per_target` instances in every account-region, the last `stopped` of
/// them stopped, every SSM agent healthy. Returns the ids, sorted.
fn fleet(sim: &SimCloud, config: &Config, per_target: usize, stopped: usize) -> Vec<InstanceId> {
    let mut ids = Vec::new();
    let mut n = 0u64;
    for lz in &config.landing_zones {
        for region in &lz.regions {
            for k in 0..per_target {
                n += 1;
                let id = InstanceId::new(format!("i-0{n:016x}"));
                let state = if k >= per_target - stopped {
                    InstanceState::Stopped
                } else {
                    InstanceState::Running
                };
                let instance = Instance {
                    id: id.clone(),
                    state,
                    platform: Platform::Linux,
                    instance_type: "t3.small".into(),
                    private_ip: Some("10.0.0.1".into()),
                    launch_time: None,
                    tags: std::iter::once(("Name".into(), format!("srv-{n}"))).collect(),
                };
                sim.add_instance(&lz.account_id, region, instance, Agent::Healthy);
                ids.push(id);
            }
        }
    }
    ids.sort();
    ids
}

async fn run(cloud: &Paced<SimCloud>, config: &Config, options: &Options) -> Run {
    let wf = Workflow {
        events: Default::default(),
        cloud,
        config,
        options,
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

fn record<'r>(run: &'r Run, id: &InstanceId) -> &'r Record {
    run.records()
        .find(|r| r.instance.id == *id)
        .expect("instance in the run")
}

fn reasons(run: &Run, id: &InstanceId) -> String {
    record(run, id)
        .verdict
        .as_ref()
        .expect("a verdict")
        .reasons
        .join("; ")
}

/// Each CreateImage at most once per instance, and every start after the
/// instance's CreateImage.
fn assert_backup_before_start(sim: &SimCloud) {
    let mut imaged = BTreeSet::new();
    for (api, id) in sim.mutation_log() {
        match api {
            Api::CreateImage => assert!(imaged.insert(id.clone()), "{id} backed up twice"),
            Api::StartInstances => assert!(imaged.contains(&id), "{id} started before its backup"),
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_instance_fault_fails_alone_and_the_rest_is_ready_sim() {
    let config = config();
    let sim = SimCloud::empty();
    let ids = fleet(&sim, &config, 10, 4);
    // Instance k of target t: running for k in 0..6, stopped for 6..10.
    let at = |t: usize, k: usize| ids[t * 10 + k].clone();
    let faults = [
        (
            Fault::CreateImageError(at(0, 0)),
            "backup: CreateImage: InvalidParameterValue",
        ),
        (Fault::AmiFailed(at(0, 1)), "backup: AMI failed"),
        (Fault::AmiStuck(at(1, 0)), "backup: pending after 1800s"),
        (
            Fault::InsufficientCapacity(at(1, 7)),
            "start: StartInstances: InsufficientInstanceCapacity",
        ),
        (Fault::TerminatedBeforeStart(at(2, 8)), "state: terminated"),
        (
            Fault::SsmNeverOnline(at(2, 9)),
            "ssm: ConnectionLost after 600s",
        ),
        (Fault::Impaired(at(3, 2)), "status-check: instance impaired"),
    ];
    for (f, _) in &faults {
        sim.fault(f.clone());
    }
    let cloud = Paced::new(sim);
    let run = run(&cloud, &config, &options("faults-1")).await;

    assert!(run.has_failures());
    let victims: BTreeSet<&InstanceId> = faults.iter().filter_map(|(f, _)| f.instance()).collect();
    for (fault, reason) in &faults {
        let id = fault.instance().unwrap();
        let got = reasons(&run, id);
        assert!(
            got.contains(reason),
            "{fault}: expected {reason:?} in {got:?}"
        );
    }
    assert!(reasons(&run, &at(1, 7)).contains("state: stopped (expected running)"));
    for r in run.records().filter(|r| !victims.contains(&r.instance.id)) {
        let v = r.verdict.as_ref().unwrap();
        assert!(v.ready, "{} is not ready: {:?}", r.instance.id, v.reasons);
    }
    // 16 stopped; the capacity and terminated ones did not start.
    assert_eq!(
        run.records()
            .filter(|r| r.start.as_ref().is_some_and(|s| s.started_by_run))
            .count(),
        16 - 2
    );
    assert_backup_before_start(cloud.inner());
}

#[tokio::test(start_paused = true)]
async fn an_instance_whose_backup_failed_is_not_started_sim() {
    let config = config();
    let sim = SimCloud::empty();
    let ids = fleet(&sim, &config, 4, 2);
    // The last of each target's four is stopped.
    let victim = ids[3].clone();
    let account: AccountId = "111111111111".parse().unwrap();
    let region: Region = "us-east-1".parse().unwrap();
    assert!(
        sim.instances(&account, &region)
            .iter()
            .any(|i| i.id == victim && i.state == InstanceState::Stopped)
    );
    sim.fault(Fault::CreateImageError(victim.clone()));
    let cloud = Paced::new(sim);
    let run = run(&cloud, &config, &options("no-backup-no-start")).await;
    let r = record(&run, &victim);
    let start = r.start.as_ref().unwrap();
    assert!(!start.started_by_run);
    assert!(
        start
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("no AMI from this run"),
        "{start:?}"
    );
    assert!(
        !cloud
            .inner()
            .mutation_log()
            .iter()
            .any(|(api, id)| *api == Api::StartInstances && *id == victim.as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn assume_role_denied_fails_that_landing_zone_alone_sim() {
    let config = config();
    let sim = SimCloud::empty();
    fleet(&sim, &config, 5, 1);
    sim.fault(Fault::AssumeRoleDenied {
        landing_zone: "data-nonprod".into(),
    });
    let cloud = Paced::new(sim);
    let run = run(&cloud, &config, &options("denied-1")).await;
    assert_eq!(run.landing_zone_failures.len(), 1);
    assert!(run.landing_zone_failures[0].error.contains("AccessDenied"));
    assert_eq!(run.instance_count(), 10, "only app-nonprod's instances");
    assert!(
        run.records()
            .all(|r| r.landing_zone == "app-nonprod" && r.verdict.as_ref().unwrap().ready)
    );
    assert!(run.has_failures());
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_a_refused_permission_and_changes_nothing_sim() {
    let config = config();
    let sim = SimCloud::empty();
    fleet(&sim, &config, 5, 2);
    sim.fault(Fault::StartDenied {
        landing_zone: "data-nonprod".into(),
    });
    let cloud = Paced::new(sim);
    let mut opts = options("dry-1");
    opts.dry_run = true;
    let run = run(&cloud, &config, &opts).await;

    // CreateImage, StartInstances and CreateTags in each of 4 targets.
    assert_eq!(run.permission_checks.len(), 12);
    let refused: Vec<_> = run
        .permission_checks
        .iter()
        .filter(|c| !c.allowed)
        .map(|c| (c.target.to_string(), c.action.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            ("data-nonprod/us-east-1".to_owned(), "StartInstances"),
            ("data-nonprod/eu-west-1".to_owned(), "StartInstances"),
        ]
    );
    assert!(
        run.permission_checks
            .iter()
            .filter_map(|c| c.error.as_deref())
            .all(|e| e.starts_with("denied: UnauthorizedOperation"))
    );
    assert!(run.has_failures(), "a refused permission fails the dry run");
    let sim = cloud.inner();
    assert!(sim.mutation_log().is_empty(), "a dry run changes nothing");
    for lz in &config.landing_zones {
        for region in &lz.regions {
            assert!(sim.images(&lz.account_id, region).is_empty());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn unreachable_region_fails_that_target_alone_sim() {
    let config = config();
    let sim = SimCloud::empty();
    fleet(&sim, &config, 5, 1);
    sim.fault(Fault::RegionUnreachable {
        landing_zone: "app-nonprod".into(),
        region: "eu-west-1".parse().unwrap(),
    });
    let cloud = Paced::new(sim);
    let run = run(&cloud, &config, &options("unreachable-1")).await;
    let failed: Vec<_> = run.targets.iter().filter(|t| t.error.is_some()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].target.to_string(), "app-nonprod/eu-west-1");
    assert!(
        failed[0]
            .error
            .as_ref()
            .unwrap()
            .contains("no answer from AWS")
    );
    assert_eq!(run.instance_count(), 15);
    assert!(run.records().all(|r| r.verdict.as_ref().unwrap().ready));
}

#[tokio::test(start_paused = true)]
async fn rerun_with_the_same_run_id_creates_no_duplicate_amis_sim() {
    let config = config();
    let sim = SimCloud::empty();
    fleet(&sim, &config, 6, 2);
    let cloud = Paced::new(sim);
    let first = run(&cloud, &config, &options("same-run")).await;
    assert!(!first.has_failures());
    let created = cloud.api_calls().snapshot()[&Api::CreateImage].calls;
    assert_eq!(created, 24);
    let second = run(&cloud, &config, &options("same-run")).await;
    assert!(!second.has_failures());
    assert_eq!(
        cloud.api_calls().snapshot()[&Api::CreateImage].calls,
        24,
        "the rerun created AMIs"
    );
    assert!(second.records().all(|r| r.backup.as_ref().unwrap().reused));
    let images = cloud.inner().images(
        &"111111111111".parse::<AccountId>().unwrap(),
        &"us-east-1".parse().unwrap(),
    );
    assert_eq!(images.len(), 6);
    for image in &images {
        for snap in image.snapshot_ids.iter() {
            let tags = cloud.inner().snapshot_tags(
                &"111111111111".parse::<AccountId>().unwrap(),
                &"us-east-1".parse().unwrap(),
                snap,
            );
            assert_eq!(
                tags.get("prepatch:run-id").map(String::as_str),
                Some("same-run")
            );
        }
    }
    assert_backup_before_start(cloud.inner());
}

#[tokio::test(start_paused = true)]
async fn calls_scale_with_account_regions_not_instances_sim() {
    let mut config = config();
    config.landing_zones.truncate(1);
    config.landing_zones[0].regions.truncate(1);
    let mut fixed = Vec::new();
    for n in [100usize, 400] {
        let sim = SimCloud::empty();
        fleet(&sim, &config, n, n / 5);
        let cloud = Paced::new(sim);
        let run = run(&cloud, &config, &options(&format!("scale-{n}"))).await;
        assert!(!run.has_failures(), "{n}");
        let calls = cloud.api_calls().snapshot();
        assert_eq!(calls[&Api::CreateImage].calls, n as u64);
        // SSM pages hold 50 at most: each poll costs ceil(n / 50) there.
        let ssm = calls[&Api::DescribeInstanceInformation].calls;
        assert!(
            ssm <= 10 * n.div_ceil(50) as u64,
            "{n} instances: {ssm} SSM calls"
        );
        let others: u64 = calls
            .iter()
            .filter(|(a, _)| !matches!(a, Api::CreateImage | Api::DescribeInstanceInformation))
            .map(|(_, c)| c.calls)
            .sum();
        // Polls, not instances: a bound that does not grow with n. Each
        // wait looks again 1 s in, then a quarter of the time waited later:
        // about 22 looks for AMIs (3 minutes) and 20 for status checks
        // (2 minutes).
        assert!(
            others <= 70,
            "{n} instances: {others} EC2 calls besides CreateImage: {calls:?}"
        );
        fixed.push(others);
        assert!(
            calls[&Api::StartInstances].calls <= (n / 5).div_ceil(100) as u64 + 1,
            "{calls:?}"
        );
    }
    assert!(
        fixed[1] <= fixed[0] + 4,
        "{fixed:?}: 4 times the fleet, 4 times the calls"
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_is_paced_and_never_a_failure_sim() {
    let mut config = config();
    config.landing_zones.truncate(1);
    config.landing_zones[0].regions.truncate(1);
    let sim = SimCloud::empty();
    fleet(&sim, &config, 600, 100);
    let cloud = Paced::new(sim);
    let run = run(&cloud, &config, &options("throttle-1")).await;
    assert!(!run.has_failures());
    let calls = cloud.api_calls().snapshot();
    let total: u64 = calls.values().map(|c| c.calls).sum();
    let throttled: u64 = calls.values().map(|c| c.throttled).sum();
    assert!(
        throttled * 20 < total,
        "{throttled} of {total} calls throttled"
    );
}

/// With 5,000 to start in one account-region, EC2's resource bucket (1,000
/// and 2 a second) spreads the StartInstances calls over 33 minutes, far
/// past `server_start.wait_timeout` (10 minutes): the wait for `running`
/// counts from the last of them, so none is reported still pending.
#[tokio::test(start_paused = true)]
async fn the_start_wait_counts_from_the_last_start_of_5000_sim() {
    let mut config = config();
    config.landing_zones.truncate(1);
    config.landing_zones[0].regions.truncate(1);
    config.phases.server_start.require_backup = false;
    let sim = SimCloud::empty();
    fleet(&sim, &config, 5000, 5000);
    let cloud = Paced::new(sim);
    let mut options = options("start-5000");
    options.plans.insert(
        prepatch::model::Phase::AmiBackup,
        prepatch::model::Plan::Skip("not under test".into()),
    );
    options.plans.insert(
        prepatch::model::Phase::Validation,
        prepatch::model::Plan::Skip("not under test".into()),
    );
    let run = run(&cloud, &config, &options).await;
    let starts: Vec<_> = run.records().filter_map(|r| r.start.as_ref()).collect();
    assert_eq!(starts.len(), 5000);
    for s in &starts {
        assert_eq!(s.error, None);
        assert_eq!(s.final_state, InstanceState::Running);
    }
    let sent: Vec<_> = starts.iter().filter_map(|s| s.started_at).collect();
    let (first, last) = (sent.iter().min().unwrap(), sent.iter().max().unwrap());
    let spread = (*last - *first).num_seconds();
    let timeout = config.phases.server_start.wait_timeout.as_secs() as i64;
    assert!(
        spread >= 1990 && spread > timeout,
        "the sends spread over {spread} s"
    );
}

/// An account-region whose AMIs are ready starts its instances and is
/// validated while another still waits for its own (500 GB volumes: about
/// 18 minutes), instead of waiting for the slowest.
#[tokio::test(start_paused = true)]
async fn each_account_region_goes_on_at_its_own_pace_sim() {
    let mut config = config();
    config.landing_zones.truncate(1);
    let lz = &config.landing_zones[0];
    let sim = SimCloud::empty();
    for (n, (region, gb)) in [("us-east-1", 8), ("eu-west-1", 500)]
        .into_iter()
        .enumerate()
    {
        for (k, state) in [InstanceState::Running, InstanceState::Stopped]
            .into_iter()
            .enumerate()
        {
            let instance = Instance {
                id: InstanceId::new(format!("i-0{n}{k:015x}")),
                state,
                platform: Platform::Linux,
                instance_type: "t3.small".into(),
                private_ip: None,
                launch_time: None,
                tags: Default::default(),
            };
            sim.add_described(
                &lz.account_id,
                &region.parse::<Region>().unwrap(),
                instance,
                gb,
                Agent::Healthy,
                std::time::Duration::from_secs(30),
            );
        }
    }
    let cloud = Paced::new(sim);
    let run = run(&cloud, &config, &options("pace-1")).await;
    assert!(
        !run.has_failures(),
        "{:?}",
        run.records().map(|r| &r.verdict).collect::<Vec<_>>()
    );
    let of = |region: &str| {
        run.targets
            .iter()
            .find(|t| t.target.region.as_str() == region)
            .expect("the account-region")
    };
    let fast_started = of("us-east-1")
        .records
        .iter()
        .find_map(|r| r.start.as_ref()?.started_at)
        .expect("a start");
    let slow_backed_up = of("eu-west-1")
        .records
        .iter()
        .filter_map(|r| r.backup.as_ref()?.completed_at)
        .max()
        .expect("AMIs");
    assert!(
        (slow_backed_up - fast_started).num_seconds() > 600,
        "us-east-1 started at {fast_started}, eu-west-1's AMIs ended at {slow_backed_up}"
    );
    // The phases overlap: together they take longer than the run.
    let wall = (run.finished_at.unwrap() - run.started_at).num_seconds() as f64;
    let phases: f64 = run.phases.iter().map(|p| p.seconds).sum();
    assert!(phases > wall + 60.0, "phases {phases} s, run {wall} s");
}
