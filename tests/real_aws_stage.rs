//! What real AWS does that prepatch meets in an account, as the stage has
//! it from AWS's documentation (tests/support/stage.py cites each page):
//! AMI ancestry on every backup, new AMIs and tasks invisible for a while,
//! CreateImage refused while a volume's snapshots are in progress, STS's
//! own refusals, a stop that fails a whole batch, a server started again
//! by someone else, Auto Scaling members. The real binary and SDK against
//! moto behind the stage.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_ec2 as ec2;
use serde_json::json;
use support::*;

const A: &str = "111111111111";
const B: &str = "222222222222";
const US: &str = "us-east-1";

fn config(extra: &str) -> String {
    format!(
        "aws:
  regions: [us-east-1]
landing_zones:
  - {{name: lza, account_id: \"{A}\", environment: nonprod}}
{extra}"
    )
}

fn run_in(moto: &Moto, s: &Scratch, args: &[&str]) -> (i32, String, String) {
    let (c, o) = (s.config(), s.reports());
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", c.to_str().unwrap(), "-o", o.to_str().unwrap()]);
    let out = prepatch(Some(moto), None, &all);
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// The AMIs of `run`, by the instance their tag names, with their count.
async fn backups_of(ec2: &ec2::Client, run: &str) -> BTreeMap<String, Vec<ec2::types::Image>> {
    let mut out: BTreeMap<String, Vec<ec2::types::Image>> = BTreeMap::new();
    for i in images(ec2).await {
        let tags = tag_map(i.tags());
        if tags.get("prepatch:run-id").map(String::as_str) == Some(run) {
            out.entry(tags["prepatch:instance-id"].clone())
                .or_default()
                .push(i);
        }
    }
    out
}

async fn snapshot_ids(ec2: &ec2::Client) -> BTreeSet<String> {
    ec2.describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .expect("snapshots")
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_id().map(str::to_owned))
        .collect()
}

async fn state_of(ec2: &ec2::Client, id: &str) -> String {
    instances(ec2).await[id].0.clone()
}

/// One round as on real AWS, ancestry on every AMI, new AMIs and tasks
/// invisible for seconds: a run SIGKILLed mid-backup, resumed (exactly one
/// AMI per instance), restored, two instances rolled back, and the run's
/// backups released (every one and its snapshots gone, nothing else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_round_with_ami_ancestry_and_eventual_consistency_stage() {
    // More than EC2's CreateImage burst (50): the backup phase is paced
    // and lasts seconds, so the kill lands in the middle of it.
    const N: usize = 70;
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, N as i32, false, &[("Name", "app")]).await;
    let stopped: Vec<String> = ids[..4].to_vec();
    stop(&ec2, &stopped).await;
    // Someone else's AMI of one of the instances, and an unrelated one:
    // neither is the run's, and cleanup must leave both.
    let foreign = ec2
        .create_image()
        .instance_id(&ids[10])
        .name("team-golden-image")
        .send()
        .await
        .expect("foreign AMI")
        .image_id()
        .expect("id")
        .to_owned();
    moto.stage.configure(json!({
        "latency_ms": [2, 10],
        "pending": {"image_seconds": 2, "start_seconds": 1},
        "visibility": {"image_seconds": 3, "task_seconds": 2},
        "root_tasks": {"seconds": 2},
    }));
    let s = Scratch::new(&config(
        "workflow:
  phases:
    ami_backup: {deprecate_at_expiry: true}
",
    ));
    let db = s.reports().join("prepatch.db");
    let (c, o) = (s.config(), s.reports());
    let run = "20261207T120000Z-r0nd";
    let mut child = prepatch_command(
        Some(&moto),
        None,
        &[
            "-l",
            "lza",
            "--run-id",
            run,
            "-c",
            c.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    while created_so_far(&db) < 20 {
        assert!(Instant::now() < deadline, "the backup phase never started");
        assert!(child.try_wait().expect("wait").is_none(), "ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let made = backups_of(&ec2, run).await.len();
    assert!(made < N, "killed mid-phase: {made} of {N} made");

    // Resumed at once: the newest AMIs are still invisible, so some of
    // its CreateImage calls meet InvalidAMIName.Duplicate and must find
    // their AMI once it shows.
    moto.stage.clear_log();
    let (code, out, err) = run_in(&moto, &s, &["--resume", "latest"]);
    println!("resume:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    let per_instance = backups_of(&ec2, run).await;
    let counts: BTreeSet<usize> = per_instance.values().map(Vec::len).collect();
    println!(
        "resume: {} instances, {} with a backup, AMIs per instance {counts:?} ({made} made before the kill)",
        N,
        per_instance.len()
    );
    assert_eq!(per_instance.len(), N, "every instance backed up");
    assert_eq!(counts, BTreeSet::from([1]), "exactly one AMI each");
    for (instance, amis) in &per_instance {
        let ami = &amis[0];
        assert_eq!(ami.source_instance_id(), Some(instance.as_str()));
        assert_eq!(ami.source_image_id(), Some(LINUX_AMI), "ancestry");
        assert!(
            ami.deprecation_time().is_some(),
            "{instance}: deprecated at expiry"
        );
    }
    for id in &stopped {
        assert_eq!(state_of(&ec2, id).await, "running", "{id} started");
    }

    // Restore: the four the run started are stopped again.
    let (code, out, err) = run_in(&moto, &s, &["restore", "--run", run]);
    println!("restore:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    for id in &stopped {
        assert_eq!(
            state_of(&ec2, id).await,
            "stopped",
            "{id} stopped by restore"
        );
    }
    assert_eq!(
        state_of(&ec2, &ids[5]).await,
        "running",
        "never started by it"
    );

    // Rollback of two running instances, each to its own backup.
    moto.stage.clear_log();
    let pick = format!("{},{}", ids[5], ids[6]);
    let (code, out, err) = run_in(&moto, &s, &["rollback", "--run", run, "--instances", &pick]);
    println!("rollback:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    let tasks: Vec<(String, String)> = moto
        .stage
        .calls("CreateReplaceRootVolumeTask")
        .iter()
        .filter(|e| e.status == 200)
        .map(|e| {
            (
                e.params["InstanceId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e.params["ImageId"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for (instance, image) in &tasks {
        let own = per_instance[instance][0].image_id().unwrap_or_default();
        assert_eq!(image, own, "{instance} rolled back to its own backup");
    }
    assert!(out.contains("rolled back 2 (2 READY"), "{out}");

    // A copy of a backup, tags and all: never released with the run.
    let source = per_instance[&ids[7]][0]
        .image_id()
        .unwrap_or_default()
        .to_owned();
    let copy = ec2
        .copy_image()
        .source_image_id(&source)
        .source_region(US)
        .name("copy-of-a-backup")
        .copy_image_tags(true)
        .send()
        .await
        .expect("copy")
        .image_id()
        .expect("id")
        .to_owned();
    tokio::time::sleep(Duration::from_secs(4)).await; // the copy becomes visible
    let snapshots_before = snapshot_ids(&ec2).await;
    let run_snapshots: BTreeSet<String> = per_instance
        .values()
        .flat_map(|amis| amis[0].block_device_mappings())
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
        .collect();
    assert_eq!(run_snapshots.len(), N);

    let (code, out, err) = run_in(&moto, &s, &["cleanup", "--run", run, "--yes"]);
    println!("cleanup:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    // Only the copy still carries the run's tags, and it is still there.
    let tagged: Vec<String> = backups_of(&ec2, run)
        .await
        .values()
        .flatten()
        .filter_map(|i| i.image_id().map(str::to_owned))
        .collect();
    assert_eq!(tagged, vec![copy.clone()], "{out}");
    assert!(
        out.contains("LEFT ALONE"),
        "the copy is named as left alone:\n{out}"
    );
    let left: BTreeSet<String> = images(&ec2)
        .await
        .iter()
        .filter_map(|i| i.image_id().map(str::to_owned))
        .collect();
    assert_eq!(
        left,
        BTreeSet::from([foreign.clone(), copy.clone()]),
        "{out}"
    );
    let snapshots_after = snapshot_ids(&ec2).await;
    assert!(
        run_snapshots.is_disjoint(&snapshots_after),
        "every snapshot of the run gone"
    );
    assert_eq!(
        snapshots_after,
        &snapshots_before - &run_snapshots,
        "nothing else deleted"
    );
}

/// CreateImage refused while the volume has as many snapshots in progress
/// as EBS allows: asked again later, and reported with AWS's reason when
/// it never goes through within the backup timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_image_refused_for_busy_snapshots_is_asked_again_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 3, false, &[("Name", "app")]).await;
    moto.stage.configure(json!({
        "snapshot_busy": {"instances": [ids[0], ids[1]], "times": 1},
    }));
    let s = Scratch::new(&config(
        "workflow:
  phases:
    ami_backup: {timeout: 25}
",
    ));
    let (code, out, err) = run_in(&moto, &s, &["-l", "lza", "--phase", "ami-backup"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let refused = moto
        .stage
        .calls("CreateImage")
        .iter()
        .filter(|e| e.fault.as_deref() == Some("snapshot_busy"))
        .count();
    assert_eq!(refused, 2, "one refusal each for two instances");
    assert_eq!(
        images(&ec2).await.len(),
        3,
        "all three backed up in the end"
    );

    // Always busy: reported with the reason once the timeout is spent.
    let ids = launch(&ec2, 1, false, &[("Name", "busy")]).await;
    moto.stage.configure(json!({
        "snapshot_busy": {"instances": [ids[0]], "times": -1},
    }));
    let s = Scratch::new(&config(
        "workflow:
  phases:
    ami_backup: {timeout: 20}
",
    ));
    let started = Instant::now();
    let (code, out, err) = run_in(&moto, &s, &["-l", "lza", "--phase", "ami-backup"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let inventory = s.inventory();
    let row = inventory
        .iter()
        .find(|r| r["instance_id"] == ids[0])
        .expect("its row");
    println!("busy: {}", row["backup_error"]);
    assert!(
        row["backup_error"].contains("ConcurrentSnapshotLimitExceeded")
            && row["backup_error"].contains("snapshots in progress after"),
        "{row:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "within the timeout"
    );
}

/// STS as AWS answers it: a session longer than the role allows is
/// `ValidationError` (asked again at an hour), a region where STS is off
/// is `RegionDisabledException` (the next region is asked), and a role
/// that requires an external id gets it from the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_refusals_are_answered_as_aws_gives_them_stage() {
    let moto = Moto::start();
    for (account, region) in [(A, "eu-west-1"), (A, "us-west-2"), (B, US)] {
        let ec2 = ec2_in(&moto, account, region).await;
        launch(&ec2, 2, false, &[("Name", "app")]).await;
    }
    moto.stage.configure(json!({
        "sts": {
            "max_session_seconds": {A: 3600, B: 3600},
            "disabled_regions": ["eu-west-1"],
            "external_ids": {B: "prepatch-ext-7"},
        },
    }));
    moto.stage.clear_log();
    let lzs = |external: &str| {
        format!(
            "aws:
  regions: [us-east-1]
  session_duration: 7200
landing_zones:
  - {{name: lza, account_id: \"{A}\", environment: nonprod, regions: [eu-west-1, us-west-2]}}
  - {{name: lzb, account_id: \"{B}\", environment: nonprod{external}}}
"
        )
    };
    let s = Scratch::new(&lzs(", external_id_env: PP_TEST_EXTERNAL_ID"));
    let (c, o) = (s.config(), s.reports());
    let args = [
        "--scanner-only",
        "--environment",
        "nonprod",
        "-c",
        c.to_str().unwrap(),
        "-o",
        o.to_str().unwrap(),
    ];
    let out = prepatch_command(Some(&moto), None, &args)
        .env("PP_TEST_EXTERNAL_ID", "prepatch-ext-7")
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    println!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let inventory = s.inventory();
    let regions: BTreeSet<(String, String)> = inventory
        .iter()
        .map(|r| (r["landing_zone"].clone(), r["region"].clone()))
        .collect();
    assert_eq!(
        regions,
        BTreeSet::from([
            ("lza".into(), "eu-west-1".into()),
            ("lza".into(), "us-west-2".into()),
            ("lzb".into(), US.into()),
        ]),
        "every account-region scanned"
    );
    let assumes = moto.stage.calls("AssumeRole");
    let of = |account: &str| -> Vec<(Option<String>, String, u16)> {
        assumes
            .iter()
            .filter(|e| {
                e.params["RoleArn"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(account)
            })
            .map(|e| {
                (
                    e.region.clone(),
                    e.params["DurationSeconds"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    e.status,
                )
            })
            .collect()
    };
    println!("AssumeRole of {A}: {:?}", of(A));
    assert_eq!(
        of(A),
        vec![
            (Some("eu-west-1".into()), "7200".into(), 403),
            (Some("us-west-2".into()), "7200".into(), 400),
            (Some("us-west-2".into()), "3600".into(), 200),
        ]
    );
    assert!(
        assumes
            .iter()
            .filter(|e| e.params["RoleArn"].as_str().unwrap_or_default().contains(B))
            .all(|e| e.params["ExternalId"] == "prepatch-ext-7"),
        "the external id is given"
    );

    // Without the external id, lzb is refused by STS and reported; lza runs.
    let s = Scratch::new(&lzs(""));
    let (code, out, err) = run_in(&moto, &s, &["--scanner-only", "--environment", "nonprod"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("AccessDenied"),
        "the refusal is named:\n{out}\n{err}"
    );
}

/// Restore as AWS has it: one instance EC2 cannot stop fails a whole
/// StopInstances, so it fails alone and the rest are stopped; a server
/// started again by someone else since the run (its LaunchTime moved) is
/// left alone though its tag and the journal agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_isolates_a_failed_stop_and_leaves_a_restarted_server_alone_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 4, false, &[("Name", "app")]).await;
    stop(&ec2, &ids[..3]).await;
    let s = Scratch::new(&config(""));
    let run = "20261207T130000Z-rst1";
    let (code, out, err) = run_in(&moto, &s, &["-l", "lza", "--run-id", run]);
    assert_eq!(code, 0, "{out}\n{err}");
    // ids[1]: stopped and started again by someone else, a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    stop(&ec2, &ids[1..2]).await;
    ec2.start_instances()
        .instance_ids(&ids[1])
        .send()
        .await
        .expect("start");
    // ids[2]: terminated by someone just before the stops are sent.
    moto.stage.configure(json!({
        "hooks": [{"when": "before", "action": "StopInstances", "do": "terminate", "instances": [ids[2]]}],
    }));
    moto.stage.clear_log();
    let (code, out, err) = run_in(&moto, &s, &["restore", "--run", run]);
    println!("restore:\n{out}");
    assert_eq!(code, 1, "one failed stop:\n{out}\n{err}");
    assert_eq!(
        state_of(&ec2, &ids[0]).await,
        "stopped",
        "stopped by restore"
    );
    assert_eq!(
        state_of(&ec2, &ids[1]).await,
        "running",
        "someone else's now"
    );
    assert!(
        out.contains("started again since this run started it"),
        "{out}"
    );
    assert_eq!(state_of(&ec2, &ids[3]).await, "running", "never the run's");
    let stops = moto.stage.calls("StopInstances");
    let sent: Vec<Vec<String>> = stops
        .iter()
        .map(|e| {
            e.params
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("InstanceId."))
                .filter_map(|(_, v)| v.as_str().map(str::to_owned))
                .collect()
        })
        .collect();
    println!("StopInstances sent: {sent:?}");
    assert!(
        sent.iter().all(|ids_sent| !ids_sent.contains(&ids[1])),
        "never sent"
    );
    assert!(
        sent.last().is_some_and(|l| l == &vec![ids[0].clone()]),
        "the rest asked again without the culprit: {sent:?}"
    );
}

/// Auto Scaling members: reported as their group's; a stopped one is
/// not started (its group owns its state) unless the config allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_scaling_members_are_named_and_not_started_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 3, false, &[("Name", "app")]).await;
    stop(&ec2, &ids[..2]).await;
    moto.stage
        .configure(json!({"auto_scaling": {ids[0].clone(): "web-asg"}}));
    let s = Scratch::new(&config(""));
    let (code, out, err) = run_in(&moto, &s, &["-l", "lza"]);
    assert_eq!(code, 1, "the warm-pool member is NOT READY:\n{out}\n{err}");
    assert_eq!(
        state_of(&ec2, &ids[0]).await,
        "stopped",
        "its group's to start"
    );
    assert_eq!(
        state_of(&ec2, &ids[1]).await,
        "running",
        "an ordinary stopped instance"
    );
    let rows = s.inventory();
    let member = rows
        .iter()
        .find(|r| r["instance_id"] == ids[0])
        .expect("row");
    assert_eq!(member["auto_scaling_group"], "web-asg");
    assert!(
        member["start_error"].contains("Auto Scaling group"),
        "{member:?}"
    );
    assert!(!member["ami_id"].is_empty(), "backed up by default");
    let json = s.report_json();
    assert!(
        json["events"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e.to_string().contains("belong to Auto Scaling groups"))),
        "the report says so"
    );

    // Allowed explicitly: started.
    let s = Scratch::new(&config(
        "workflow:
  phases:
    server_start: {auto_scaling_members: true}
",
    ));
    let (code, out, err) = run_in(&moto, &s, &["-l", "lza"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(state_of(&ec2, &ids[0]).await, "running");
}

/// Restore never sends a stop for an instance that is still `pending`
/// (EC2 cannot stop it, and one such id fails the whole StopInstances):
/// it waits until it runs, then stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_waits_for_a_pending_instance_before_stopping_it_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 2, false, &[("Name", "app")]).await;
    stop(&ec2, &ids[..1]).await;
    moto.stage
        .configure(json!({"pending": {"start_seconds": 8}}));
    // The run gives up waiting for its start after a second: the
    // instance is still pending when restore is asked for.
    let s = Scratch::new(&config(
        "workflow:
  phases:
    server_start: {wait_timeout: 1}
",
    ));
    let run = "20261207T140000Z-pend";
    let (_, out, err) = run_in(
        &moto,
        &s,
        &["-l", "lza", "--run-id", run, "--skip-validation"],
    );
    assert_eq!(state_of(&ec2, &ids[0]).await, "pending", "{out}\n{err}");
    std::fs::write(s.config(), config("")).expect("config");
    moto.stage.clear_log();
    let (code, out, err) = run_in(&moto, &s, &["restore", "--run", run]);
    println!("restore:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(state_of(&ec2, &ids[0]).await, "stopped", "{out}");
    assert_eq!(state_of(&ec2, &ids[1]).await, "running", "never the run's");
    let stops = moto.stage.calls("StopInstances");
    assert!(!stops.is_empty(), "a stop was sent");
    assert!(
        stops.iter().all(|e| e.status == 200),
        "no StopInstances sent while it was pending: {stops:?}"
    );
}

/// Cleanup that finishes: an AMI still `pending` is not deregistered (its
/// snapshots are not all listed yet) but left with the reason; snapshots
/// whose DeleteSnapshot failed after their AMI was deregistered are found
/// again by the next cleanup, by their tags and EC2's own description of
/// them, and deleted then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_leaves_pending_amis_and_finds_orphaned_snapshots_again_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    launch(&ec2, 3, false, &[("Name", "app")]).await;
    let s = Scratch::new(&config(""));
    let run = "20261207T150000Z-orph";
    let (code, out, err) = run_in(
        &moto,
        &s,
        &["-l", "lza", "--phase", "ami-backup", "--run-id", run],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let made: BTreeSet<String> = backups_of(&ec2, run)
        .await
        .values()
        .flatten()
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
        .collect();
    assert_eq!(made.len(), 3);

    // DeleteSnapshot refused: the AMIs go, their snapshots stay.
    moto.stage
        .configure(json!({"deny": [{"service": "ec2", "action": "DeleteSnapshot"}]}));
    let (code, out, err) = run_in(&moto, &s, &["cleanup", "--run", run, "--yes"]);
    println!("cleanup, DeleteSnapshot denied:\n{out}");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(backups_of(&ec2, run).await.is_empty(), "AMIs deregistered");
    assert!(made.is_subset(&snapshot_ids(&ec2).await), "snapshots left");

    // The next cleanup finds them and deletes them.
    moto.stage.configure(json!({}));
    let (code, out, err) = run_in(&moto, &s, &["cleanup", "--run", run, "--yes"]);
    println!("cleanup again:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("which is gone: deleted"), "{out}");
    assert!(
        made.is_disjoint(&snapshot_ids(&ec2).await),
        "every one deleted"
    );

    // A due backup still pending: left, with the reason, until available.
    moto.stage
        .configure(json!({"pending": {"image_seconds": 6}}));
    std::fs::write(
        s.config(),
        config(
            "workflow:
  phases:
    ami_backup: {wait: false}
",
        ),
    )
    .expect("config");
    let later = "20261207T160000Z-pndg";
    let (code, out, err) = run_in(
        &moto,
        &s,
        &["-l", "lza", "--phase", "ami-backup", "--run-id", later],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    moto.stage.clear_log();
    let (_, out, err) = run_in(&moto, &s, &["cleanup", "--run", later, "--yes"]);
    println!("cleanup of pending AMIs:\n{out}\n{err}");
    assert!(out.contains("still pending"), "{out}");
    assert_eq!(backups_of(&ec2, later).await.len(), 3, "none deregistered");
    assert!(
        moto.stage.calls("DeregisterImage").is_empty(),
        "never asked to"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (code, out, err) = run_in(&moto, &s, &["cleanup", "--run", later, "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(backups_of(&ec2, later).await.is_empty(), "{out}");
}

/// Validation and rollback judge "ready" by one rule: a status check EC2
/// answers `not-applicable` for is no failure to either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_judges_ready_as_validation_does_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 2, false, &[("Name", "app")]).await;
    moto.stage.configure(json!({
        "status_checks": {ids[0].clone(): {"system": "not-applicable"}},
    }));
    let s = Scratch::new(&config(""));
    let run = "20261207T170000Z-redy";
    let (code, out, err) = run_in(&moto, &s, &["-l", "lza", "--run-id", run]);
    assert_eq!(code, 0, "validation: READY:\n{out}\n{err}");
    let statuses = moto.stage.calls("DescribeInstanceStatus");
    assert!(!statuses.is_empty(), "status checks were asked for");
    let (code, out, err) = run_in(
        &moto,
        &s,
        &["rollback", "--run", run, "--instances", &ids[0]],
    );
    println!("rollback:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("rolled back 1 (1 READY"), "{out}");
}
