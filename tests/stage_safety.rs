//! The defects a stage that behaves like AWS exposes, each with its test:
//! the real binary and the real SDK against moto behind the test stage
//! (`tests/support/stage.py`), which races, keeps states pending,
//! throttles, pages small and refuses as AWS does. SSM's
//! `DescribeInstanceInformation` is answered by the stage itself.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_sdk_ec2 as ec2;
use serde_json::json;
use support::stage::LogEntry;
use support::*;

const A: &str = "111111111111";
const B: &str = "222222222222";

fn config(extra: &str) -> String {
    format!(
        "aws:
  regions: [us-east-1]
landing_zones:
  - {{name: lza, account_id: \"{A}\", environment: nonprod}}
  - {{name: lzb, account_id: \"{B}\", environment: nonprod}}
{extra}"
    )
}

fn run(moto: &Moto, s: &Scratch, args: &[&str]) -> (i32, String, String) {
    let c = s.config();
    let o = s.reports();
    let mut all: Vec<&str> = args.to_vec();
    let (c, o) = (c.to_str().unwrap(), o.to_str().unwrap());
    all.extend(["-c", c, "-o", o]);
    let out = prepatch(Some(moto), None, &all);
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// `ec2:CreateImage`... each action a policy allows, by its statements.
fn allowed(policy: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(policy);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("policy")).expect("JSON");
    let mut out = BTreeSet::new();
    for st in doc["Statement"].as_array().expect("statements") {
        assert_eq!(st["Effect"], "Allow");
        match &st["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(a) => {
                out.extend(a.iter().filter_map(|a| a.as_str().map(str::to_owned)))
            }
            other => panic!("Action {other}"),
        }
    }
    out
}

/// Values of `Prefix.N` and `Prefix.N.Suffix` form parameters.
fn indexed(params: &serde_json::Value, prefix: &str, suffix: &str) -> Vec<String> {
    let Some(map) = params.as_object() else {
        return Vec::new();
    };
    let mut found: Vec<(usize, String)> = map
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
            let (n, tail) = rest.split_once('.').unwrap_or((rest, ""));
            if tail != suffix {
                return None;
            }
            Some((n.parse().ok()?, v.as_str()?.to_owned()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, v)| v).collect()
}

/// Every EC2 and SSM action in `log` is allowed by `policy`, and the tag
/// writes keep to its conditions: `CreateTags` and `DeleteTags` only on
/// instances, with the one key `prepatch:started-by` (AMI and snapshot
/// tags go inside `CreateImage`).
fn assert_policy_allows(log: &[LogEntry], policy: &str) {
    let allowed = allowed(policy);
    let role = match policy {
        "iam-policy.json" => "run",
        _ => "restore-cleanup",
    };
    let checked = support::stage::checked_calls(role);
    let mut seen = BTreeSet::new();
    for e in log
        .iter()
        .filter(|e| e.service == "ec2" || e.service == "ssm")
    {
        let action = format!("{}:{}", e.service, e.action);
        assert!(
            allowed.contains(&action),
            "{policy} does not allow {action}, which prepatch sent"
        );
        assert!(
            checked.contains(&action),
            "prepatch sent {action}, which iam_check.py does not check for the {role} role"
        );
        if matches!(e.action.as_str(), "CreateTags" | "DeleteTags") {
            let resources = indexed(&e.params, "ResourceId", "");
            assert!(
                !resources.is_empty() && resources.iter().all(|r| r.starts_with("i-")),
                "{} on {resources:?}: only instances",
                e.action
            );
            let keys = indexed(&e.params, "Tag", "Key");
            assert_eq!(keys, ["prepatch:started-by"], "{} keys", e.action);
        }
        seen.insert(action);
    }
    assert!(!seen.is_empty(), "nothing was checked");
}

fn prepatch_log(moto: &Moto) -> Vec<LogEntry> {
    moto.stage.log()
}

/// Instance id -> its tags' value for `key`.
fn tag_of(
    all: &BTreeMap<String, (String, BTreeMap<String, String>)>,
    id: &str,
    key: &str,
) -> Option<String> {
    all.get(id).and_then(|(_, t)| t.get(key).cloned())
}

fn state(all: &BTreeMap<String, (String, BTreeMap<String, String>)>, id: &str) -> String {
    all.get(id).map(|(s, _)| s.clone()).unwrap_or_default()
}

/// Defect 1: an instance someone else starts between the scan and
/// prepatch's StartInstances is not the run's; restore judges its stops by
/// AWS's answer too. The run and restore send only what their policies allow.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_someone_else_started_first_is_not_the_runs_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let up = launch(&ec2, 1, false, &[("Name", "web")]).await;
    let stopped = launch(&ec2, 3, false, &[("Name", "batch")]).await;
    stop(&ec2, &stopped).await;
    let (raced, ours, stopped_by_other) = (&stopped[0], &stopped[1], &stopped[2]);
    moto.stage.configure(json!({
        "hooks": [{"when": "before", "action": "StartInstances", "account": A,
                   "do": "start", "instances": [raced]}]
    }));
    moto.stage.clear_log();
    let s = Scratch::new(&config(""));
    let (code, out, err) = run(&moto, &s, &["-l", "lza", "--run-id", "race-1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let run_log = prepatch_log(&moto);
    let starts = moto.stage.calls("StartInstances");
    assert_eq!(starts.len(), 1, "one StartInstances for the three");
    let all = instances(&ec2).await;
    assert_eq!(
        tag_of(&all, ours, "prepatch:started-by").as_deref(),
        Some("race-1")
    );
    assert_eq!(
        tag_of(&all, raced, "prepatch:started-by"),
        None,
        "someone else started it a moment before: no tag"
    );
    let report = s.report_json();
    let started_by_run = |id: &str| {
        report["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance_id"] == id)
            .map(|i| i["start"]["started_by_run"].clone())
    };
    assert_eq!(started_by_run(raced), Some(json!(false)));
    assert_eq!(started_by_run(ours), Some(json!(true)));
    assert_policy_allows(&run_log, "iam-policy.json");

    // Restore: someone stops one of the run's instances just before the
    // restore's StopInstances reaches it.
    moto.stage.configure(json!({
        "hooks": [{"when": "before", "action": "StopInstances", "account": A,
                   "do": "stop", "instances": [stopped_by_other]}]
    }));
    moto.stage.clear_log();
    let o = s.reports();
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "restore",
            "--run",
            "race-1",
            "--yes",
            "-o",
            o.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let restore_log = prepatch_log(&moto);
    let stops = moto.stage.calls("StopInstances");
    assert_eq!(stops.len(), 1);
    let asked = indexed(&stops[0].params, "InstanceId", "");
    assert!(
        !asked.contains(raced),
        "the raced instance is never asked to stop"
    );
    let all = instances(&ec2).await;
    assert_eq!(state(&all, raced), "running", "not the run's: left running");
    assert_eq!(state(&all, &up[0]), "running");
    assert_eq!(state(&all, ours), "stopped");
    assert!(
        stdout.contains(&format!("already stopped {stopped_by_other}"))
            && stdout.contains("stopped by someone else"),
        "judged by StopInstances' answer:\n{stdout}"
    );
    assert_policy_allows(&restore_log, "iam-policy-restore-cleanup.json");
}

/// Defects 2, 3 and 10: snapshots are tagged by CreateImage itself; a
/// copy of a backup with its tags is not a backup (cleanup leaves it and
/// its snapshots alone, even from a machine whose journal lacks the run);
/// a disabled backup is still found, so a rerun makes no duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn copies_are_left_alone_and_disabled_backups_are_found_stage() {
    let moto = Moto::start();
    let east = ec2_in(&moto, A, "us-east-1").await;
    let west = ec2_in(&moto, A, "eu-west-1").await;
    launch(&east, 3, false, &[("Name", "app")]).await;
    let run_id = "20200101T000000Z-c0de";
    let s = Scratch::new(&config(""));
    moto.stage.clear_log();
    let (code, out, err) = run(
        &moto,
        &s,
        &[
            "-l",
            "lza",
            "--run-id",
            run_id,
            "--skip-start",
            "--skip-validation",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // Snapshot tags came with CreateImage: no CreateTags on a snapshot.
    for e in moto.stage.calls("CreateTags") {
        let r = indexed(&e.params, "ResourceId", "");
        assert!(
            r.iter().all(|r| !r.starts_with("snap-")),
            "CreateTags on {r:?}"
        );
    }
    let snaps = east
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            ec2::types::Filter::builder()
                .name("tag:prepatch:run-id")
                .values(run_id)
                .build(),
        )
        .send()
        .await
        .expect("snapshots");
    assert_eq!(
        snaps.snapshots().len(),
        3,
        "every snapshot tagged at creation"
    );
    let amis = images(&east).await;
    let mine: Vec<&ec2::types::Image> = amis
        .iter()
        .filter(|i| tag_map(i.tags()).get("prepatch:run-id").map(String::as_str) == Some(run_id))
        .collect();
    assert_eq!(mine.len(), 3);

    // Someone copies a backup, tags and name, into the other region, and
    // disables another backup.
    let original = mine[0].image_id().unwrap().to_owned();
    let copy = west
        .copy_image()
        .source_image_id(&original)
        .source_region("us-east-1")
        .name(mine[0].name().unwrap())
        .copy_image_tags(true)
        .send()
        .await
        .expect("copy")
        .image_id()
        .unwrap()
        .to_owned();
    let disabled = mine[1].image_id().unwrap().to_owned();
    east.disable_image()
        .image_id(&disabled)
        .send()
        .await
        .expect("disable");

    // A rerun of the backup finds all three, the disabled one too.
    let config_both = config("").replace("regions: [us-east-1]", "regions: [us-east-1, eu-west-1]");
    let s2 = Scratch::new(&config_both);
    std::fs::create_dir_all(s2.reports()).unwrap();
    std::fs::copy(
        s.reports().join("prepatch.db"),
        s2.reports().join("prepatch.db"),
    )
    .unwrap();
    moto.stage.clear_log();
    let (code, out, err) = run(
        &moto,
        &s2,
        &["-l", "lza", "--run-id", run_id, "--phase", "ami-backup"],
    );
    // The disabled backup is found, and reported as not usable as it is.
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("AMIs 2") || out.contains("      2  "), "{out}");
    let creates: Vec<LogEntry> = moto
        .stage
        .calls("CreateImage")
        .into_iter()
        .filter(|e| e.region.as_deref() == Some("us-east-1"))
        .collect();
    assert_eq!(creates.len(), 0, "no duplicate of the disabled backup");
    for e in moto.stage.calls("DescribeImages") {
        assert_eq!(e.params["IncludeDisabled"], "true", "{:?}", e.params);
    }

    // Cleanup from another machine: a journal without the run, two days
    // after the backups (and the copy) were made.
    let mut aged = aged_images(&west, 2).await;
    for id in [&original, &disabled] {
        aged[id.as_str()] = json!(2);
    }
    moto.stage.configure(json!({ "aged": aged }));
    moto.stage.clear_log();
    let other = s2.dir.path().join("other.db");
    let c = s2.config();
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "cleanup",
            "-l",
            "lza",
            "--older-than",
            "1",
            "--yes",
            "-c",
            c.to_str().unwrap(),
            "-o",
            s2.reports().to_str().unwrap(),
            "--journal",
            other.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("LEFT ALONE {copy}")) && stdout.contains("CopyImage"),
        "{stdout}"
    );
    let left: Vec<String> = east
        .describe_images()
        .owners("self")
        .include_disabled(true)
        .send()
        .await
        .expect("images")
        .images()
        .iter()
        .filter_map(|i| i.image_id().map(str::to_owned))
        .collect();
    assert!(
        !left.contains(&original) && !left.contains(&disabled),
        "{left:?}"
    );
    let west_left: Vec<ec2::types::Image> = images(&west).await;
    assert_eq!(west_left.len(), 1, "the copy stays");
    let copy_snaps: Vec<String> = west_left[0]
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
        .collect();
    for e in moto.stage.calls("DeleteSnapshot") {
        let id = e.params["SnapshotId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !copy_snaps.contains(&id),
            "the copy's snapshot {id} was deleted"
        );
    }
    assert_policy_allows(&moto.stage.log(), "iam-policy-restore-cleanup.json");
}

/// Defect 5: the dry run's permission checks send what the run will send.
#[tokio::test(flavor = "multi_thread")]
async fn the_dry_run_checks_the_calls_the_run_will_make_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 2, false, &[("Name", "app")]).await;
    stop(&ec2, &ids[1..]).await;
    let s = Scratch::new(&config(""));
    moto.stage.clear_log();
    let (code, out, err) = run(&moto, &s, &["-l", "lza", "--dry-run"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let create = moto.stage.calls("CreateImage");
    assert_eq!(create.len(), 1);
    let p = &create[0].params;
    assert_eq!(p["DryRun"], "true");
    let kinds = indexed(p, "TagSpecification", "ResourceType");
    assert_eq!(kinds, ["image", "snapshot"], "both tag specifications: {p}");
    let tags = moto.stage.calls("CreateTags");
    assert_eq!(tags.len(), 1);
    assert_eq!(
        indexed(&tags[0].params, "Tag", "Key"),
        ["prepatch:started-by"]
    );
    assert_eq!(indexed(&tags[0].params, "ResourceId", ""), [ids[1].clone()]);
    assert!(images(&ec2).await.is_empty(), "a dry run makes nothing");

    // A role that may not create the image with its tags fails the dry run.
    moto.stage
        .configure(json!({"deny": [{"service": "ec2", "action": "CreateImage"}]}));
    let (code, out, err) = run(&moto, &s, &["-l", "lza", "--dry-run"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("UnauthorizedOperation"), "{out}");
}

/// Defect 6: restore takes prod from the run's record too.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_that_now_says_nonprod_does_not_bypass_the_prod_guard_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 1, false, &[("Name", "app")]).await;
    stop(&ec2, &ids).await;
    let prod = config("").replace(
        "environment: nonprod}\n  - {name: lzb",
        "environment: prod}\n  - {name: lzb",
    );
    let s = Scratch::new(&prod);
    let (code, out, err) = run(&moto, &s, &["-l", "lza", "--yes", "--run-id", "prod-1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(state(&instances(&ec2).await, &ids[0]), "running");
    // The same landing zone, now called nonprod.
    let relaxed = Scratch::new(&config(""));
    let c = relaxed.config();
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "restore",
            "--run",
            "prod-1",
            "-c",
            c.to_str().unwrap(),
            "-o",
            s.reports().to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("need confirmation (lza)") && stderr.contains("--yes"),
        "{stderr}"
    );
    assert_eq!(
        state(&instances(&ec2).await, &ids[0]),
        "running",
        "nothing stopped"
    );
}

/// Defect 7: a failed backup means no start; a pending one may start, and
/// validation keeps the instance NOT READY until its AMI is available.
#[tokio::test(flavor = "multi_thread")]
async fn starts_wait_for_a_backup_that_exists_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 2, false, &[("Name", "app")]).await;
    stop(&ec2, &ids).await;
    let (failing, fine) = (&ids[0], &ids[1]);
    moto.stage.configure(json!({
        "pending": {"image_seconds": 2},
        "failed_images": [failing],
    }));
    let s = Scratch::new(&config(""));
    let (code, out, err) = run(&moto, &s, &["-l", "lza"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let all = instances(&ec2).await;
    assert_eq!(
        state(&all, failing),
        "stopped",
        "its AMI failed: not started"
    );
    assert_eq!(state(&all, fine), "running");

    // An AMI still pending: the instance is started, and NOT READY.
    let more = launch(&ec2, 1, false, &[("Name", "app")]).await;
    stop(&ec2, &more).await;
    moto.stage
        .configure(json!({"pending": {"image_seconds": 600}}));
    let slow = Scratch::new(&config(
        "workflow:\n  phases:\n    ami_backup:\n      timeout: 3\n",
    ));
    let (code, out, err) = run(&moto, &slow, &["-l", "lza", "--no-wait-backup"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(state(&instances(&ec2).await, &more[0]), "running");
    let report = slow.report_json();
    let row = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance_id"] == more[0].as_str())
        .expect("row");
    assert_eq!(row["validation"]["ready"], json!(false), "{row}");
    let reasons = row["validation"]["reasons"].to_string();
    assert!(reasons.contains("pending"), "{reasons}");
}

/// Section 3: a throttling storm with small pages over 2 accounts x 2
/// regions ends as a calm run does, and the report counts every throttle
/// the stage gave.
#[tokio::test(flavor = "multi_thread")]
async fn a_throttling_storm_over_small_pages_ends_as_a_calm_run_stage() {
    let moto = Moto::start();
    let mut stopped_ids = Vec::new();
    let mut all_ids = Vec::new();
    for account in [A, B] {
        for region in ["us-east-1", "eu-west-1"] {
            let ec2 = ec2_in(&moto, account, region).await;
            // One reservation each: DescribeInstances pages by reservation.
            let mut ids = Vec::new();
            for _ in 0..6 {
                ids.extend(launch(&ec2, 1, false, &[("Name", "app")]).await);
            }
            stop(&ec2, &ids[..3]).await;
            stopped_ids.extend(ids[..3].iter().cloned());
            all_ids.extend(ids);
        }
    }
    let both = config("").replace("regions: [us-east-1]", "regions: [us-east-1, eu-west-1]");
    let s = Scratch::new(&both);
    let storm = json!({
        "seed": 13,
        "page_size": 2,
        "throttle": [{"percent": 30}],
        "pending": {"image_seconds": 2, "start_seconds": 2, "stop_seconds": 2},
    });
    moto.stage.configure(storm.clone());
    moto.stage.clear_log();
    let began = std::time::Instant::now();
    let (code, out, err) = run(
        &moto,
        &s,
        &["-l", "lza,lzb", "--run-id", "20200101T000000Z-5702"],
    );
    let wall = began.elapsed();
    assert_eq!(code, 0, "{out}\n{err}");
    let log = moto.stage.log();
    let throttled = log
        .iter()
        .filter(|e| e.fault.as_deref() == Some("throttle"))
        .count() as u64;
    assert!(throttled > 10, "a storm: {throttled}");
    let report = s.report_json();
    let counted: u64 = report["performance"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["api_calls"].as_array().unwrap().iter())
        .map(|c| c["throttled"].as_u64().unwrap())
        .sum();
    eprintln!("storm: {wall:?}, throttled by the stage {throttled}, counted {counted}");
    assert_eq!(counted, throttled, "every throttled attempt is counted");
    // A throttled page is asked again, not its listing from the start:
    // the next request of that action in that account-region asks for the
    // same page.
    let token = |e: &LogEntry| {
        e.params
            .get("NextToken")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
    };
    let mut later_pages_throttled = 0;
    for (i, e) in log.iter().enumerate() {
        if e.fault.as_deref() != Some("throttle") || token(e).is_none() {
            continue;
        }
        later_pages_throttled += 1;
        let next = log[i + 1..]
            .iter()
            .find(|n| n.action == e.action && n.account == e.account && n.region == e.region)
            .expect("the throttled page is asked again");
        assert_eq!(
            token(next),
            token(e),
            "{} asked again from page 1",
            e.action
        );
    }
    assert!(
        later_pages_throttled > 0,
        "the storm hit a page after the first"
    );
    // Each paginated call came in 3+ pages somewhere.
    for action in [
        "DescribeInstances",
        "DescribeImages",
        "DescribeInstanceStatus",
        "DescribeInstanceInformation",
    ] {
        assert!(
            log.iter().any(|e| e.action == action && third_page(e)),
            "{action}: no third page"
        );
    }
    // The test's own look is calm.
    moto.stage.configure(json!({}));
    let mut amis = 0;
    for account in [A, B] {
        for region in ["us-east-1", "eu-west-1"] {
            let ec2 = ec2_in(&moto, account, region).await;
            amis += images(&ec2).await.len();
            for (id, (st, _)) in instances(&ec2).await {
                assert_eq!(st, "running", "{id}");
            }
        }
    }
    assert_eq!(amis, all_ids.len(), "one AMI per instance");

    // Restore and cleanup in the same storm.
    moto.stage.configure(storm.clone());
    let o = s.reports();
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "restore",
            "--run",
            "20200101T000000Z-5702",
            "--yes",
            "-o",
            o.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    // Two days later (the test's own look is calm), in the same storm.
    moto.stage.configure(json!({}));
    let mut aged = serde_json::Map::new();
    for account in [A, B] {
        for region in ["us-east-1", "eu-west-1"] {
            let ec2 = ec2_in(&moto, account, region).await;
            if let serde_json::Value::Object(m) = aged_images(&ec2, 2).await {
                aged.extend(m);
            }
        }
    }
    let mut later = storm.clone();
    later["aged"] = aged.into();
    moto.stage.configure(later);
    let c = s.config();
    moto.stage.clear_log();
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "cleanup",
            "-l",
            "lza,lzb",
            "--older-than",
            "1",
            "--yes",
            "-c",
            c.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(
        moto.stage.calls("DescribeSnapshots").iter().any(third_page),
        "DescribeSnapshots: no third page"
    );
    moto.stage.configure(json!({}));
    for account in [A, B] {
        for region in ["us-east-1", "eu-west-1"] {
            let ec2 = ec2_in(&moto, account, region).await;
            assert!(images(&ec2).await.is_empty(), "{account} {region}");
            for (id, (st, _)) in instances(&ec2).await {
                let want = if stopped_ids.contains(&id) {
                    "stopped"
                } else {
                    "running"
                };
                assert_eq!(st, want, "{id}");
            }
        }
    }
}

/// A request for a third page of 2 (the stage's tokens name the offset),
/// answered.
fn third_page(e: &LogEntry) -> bool {
    e.fault.is_none()
        && e.status == 200
        && e.params.get("NextToken").and_then(|t| t.as_str()) == Some("stage-4")
}

/// Section 3: refusals stay where they happen, on the real SDK path.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_contained_to_their_landing_zone_or_account_region_stage() {
    let moto = Moto::start();
    let mut stopped = BTreeMap::new();
    for (account, region) in [(A, "us-east-1"), (A, "eu-west-1"), (B, "us-east-1")] {
        let ec2 = ec2_in(&moto, account, region).await;
        let ids = launch(&ec2, 2, false, &[("Name", "app")]).await;
        stop(&ec2, &ids[..1]).await;
        stopped.insert((account, region), ids[0].clone());
    }
    let both = config("").replace("regions: [us-east-1]", "regions: [us-east-1, eu-west-1]");
    let s = Scratch::new(&both);
    moto.stage.configure(json!({"deny": [
        {"service": "sts", "action": "AssumeRole", "account": B},
        {"service": "ec2", "action": "StartInstances", "account": A, "region": "eu-west-1"},
    ]}));
    let (code, out, err) = run(&moto, &s, &["-l", "lza,lzb"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let a_east = ec2_in(&moto, A, "us-east-1").await;
    let a_west = ec2_in(&moto, A, "eu-west-1").await;
    assert_eq!(
        state(&instances(&a_east).await, &stopped[&(A, "us-east-1")]),
        "running"
    );
    assert_eq!(
        state(&instances(&a_west).await, &stopped[&(A, "eu-west-1")]),
        "stopped"
    );
    assert_eq!(images(&a_east).await.len(), 2);
    assert_eq!(
        images(&a_west).await.len(),
        2,
        "backups still made where starts are refused"
    );
    let json = s.report_json().to_string();
    assert!(json.contains("AccessDenied") && json.contains("UnauthorizedOperation"));
}

/// STS throttles `AssumeRole` per account, as EC2 throttles its calls: a
/// burst longer than the SDK's own three attempts is retried with backoff,
/// and the landing zone is not lost to it.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_sts_throttles_does_not_lose_a_landing_zone_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    launch(&ec2, 2, false, &[("Name", "app")]).await;
    let s = Scratch::new(&config(""));
    moto.stage.configure(json!({
        "throttle": [{"service": "sts", "action": "AssumeRole", "first": 5}],
    }));
    moto.stage.clear_log();
    let (code, out, err) = run(&moto, &s, &["-l", "lza", "--scanner-only"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let calls = moto.stage.calls("AssumeRole");
    let throttled = calls
        .iter()
        .filter(|e| e.fault.as_deref() == Some("throttle"))
        .count();
    assert_eq!(throttled, 5, "the burst was met");
    assert!(
        calls.iter().any(|e| e.status == 200),
        "then the role was assumed"
    );
}
