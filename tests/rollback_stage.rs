//! `prepatch rollback` through the real SDK against the test stage, which
//! answers EC2's replace-root-volume tasks (moto has none): each instance
//! gets its own backup of the run and nothing else; a copy, a pending AMI
//! and another run's AMI are refused with the reason; a failed task is
//! reported while the others complete; a rerun after SIGKILL makes no
//! second task; prod needs --yes; --dry-run sends only DryRun calls.

mod support;

use std::collections::BTreeMap;

use aws_sdk_ec2 as ec2;
use serde_json::json;
use support::stage::LogEntry;
use support::*;

const A: &str = "111111111111";

fn config(env: &str) -> String {
    format!(
        "aws:
  regions: [us-east-1]
landing_zones:
  - {{name: lza, account_id: \"{A}\", environment: {env}}}
"
    )
}

fn prepatch_in(moto: &Moto, s: &Scratch, args: &[&str]) -> (i32, String, String) {
    let c = s.config();
    let o = s.reports();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-c", c.to_str().unwrap(), "-o", o.to_str().unwrap()]);
    let out = prepatch(Some(moto), None, &all);
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// The run's backups, by instance.
async fn backups(ec2: &ec2::Client, run: &str) -> BTreeMap<String, String> {
    images(ec2)
        .await
        .iter()
        .filter_map(|i| {
            let t = tag_map(i.tags());
            (t.get("prepatch:run-id").map(String::as_str) == Some(run)).then(|| {
                (
                    t["prepatch:instance-id"].clone(),
                    i.image_id().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect()
}

/// (instance, image, dry run) of each `CreateReplaceRootVolumeTask` sent.
fn tasks_asked(log: &[LogEntry]) -> Vec<(String, String, bool)> {
    log.iter()
        .filter(|e| e.action == "CreateReplaceRootVolumeTask")
        .map(|e| {
            let p = |k: &str| e.params[k].as_str().unwrap_or_default().to_owned();
            (p("InstanceId"), p("ImageId"), p("DryRun") == "true")
        })
        .collect()
}

/// The `rollback.json` of the rollback whose output is `stdout` (its
/// last line names the folder).
fn rollback_json(stdout: &str) -> serde_json::Value {
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("reports: "))
        .unwrap_or_else(|| panic!("no reports line in {stdout}"));
    let path = std::path::Path::new(dir).join("rollback.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("rollback.json")).expect("JSON")
}

fn row<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|r| r["instance_id"] == id)
        .unwrap_or_else(|| panic!("{id} in {doc}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_uses_each_instances_own_backup_and_refuses_any_other_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 6, false, &[("Name", "app")]).await;
    let s = Scratch::new(&config("nonprod"));
    moto.stage.configure(json!({"latency_ms": [5, 20]}));
    for run in ["rb-1", "rb-2"] {
        let (code, out, err) = prepatch_in(
            &moto,
            &s,
            &["-l", "lza", "--phase", "ami-backup", "--run-id", run],
        );
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let mine = backups(&ec2, "rb-1").await;
    let theirs = backups(&ec2, "rb-2").await;
    assert_eq!((mine.len(), theirs.len()), (6, 6));

    // ids[2]: only a copy of its backup is left, tags and all.
    let original = &mine[&ids[2]];
    let copy = ec2
        .copy_image()
        .source_image_id(original)
        .source_region("us-east-1")
        .name("copy-of-a-backup")
        .copy_image_tags(true)
        .send()
        .await
        .expect("copy")
        .image_id()
        .unwrap_or_default()
        .to_owned();
    ec2.deregister_image()
        .image_id(original)
        .send()
        .await
        .expect("deregister");
    // ids[3]: run rb-2's AMI re-tagged as rb-1's (its own rb-1 backup gone).
    ec2.deregister_image()
        .image_id(&mine[&ids[3]])
        .send()
        .await
        .expect("deregister");
    ec2.create_tags()
        .resources(&theirs[&ids[3]])
        .tags(
            ec2::types::Tag::builder()
                .key("prepatch:run-id")
                .value("rb-1")
                .build(),
        )
        .send()
        .await
        .expect("retag");

    // ids[4]: a backup still pending, of a third run.
    moto.stage
        .configure(json!({"pending": {"image_seconds": 600}}));
    let (code, out, err) = prepatch_in(
        &moto,
        &s,
        &[
            "-l",
            "lza",
            "--phase",
            "ami-backup",
            "--no-wait-backup",
            "--run-id",
            "rb-3",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");

    // The task of ids[1] fails; tasks take 2 s.
    moto.stage.configure(json!({
        "latency_ms": [5, 20],
        "root_tasks": {"seconds": 2, "failed": [ids[1]]},
    }));

    // A dry run first: only DryRun calls, nothing made.
    moto.stage.clear_log();
    let pick = format!("{},{},{},{}", ids[0], ids[1], ids[2], ids[3]);
    let (code, out, err) = prepatch_in(
        &moto,
        &s,
        &[
            "rollback",
            "--run",
            "rb-1",
            "--instances",
            &pick,
            "--dry-run",
        ],
    );
    println!("rollback --dry-run:\n{out}");
    assert_eq!(code, 1, "two refusals make exit 1:\n{out}\n{err}");
    let asked = tasks_asked(&moto.stage.log());
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked.iter().all(|(_, _, dry)| *dry),
        "only DryRun: {asked:?}"
    );

    moto.stage.clear_log();
    let (code, out, err) = prepatch_in(
        &moto,
        &s,
        &["rollback", "--run", "rb-1", "--instances", &pick],
    );
    println!("rollback:\n{out}");
    assert_eq!(code, 1, "{out}\n{err}");
    let log = moto.stage.log();
    let mut asked = tasks_asked(&log);
    asked.sort();
    let mut expected = vec![
        (ids[0].clone(), mine[&ids[0]].clone(), false),
        (ids[1].clone(), mine[&ids[1]].clone(), false),
    ];
    expected.sort();
    assert_eq!(asked, expected, "exactly their own AMIs");
    let doc = rollback_json(&out);
    let r0 = row(&doc, &ids[0]);
    assert_eq!(
        (
            r0["action"].as_str(),
            r0["verdict"].as_str(),
            r0["task_state"].as_str()
        ),
        (Some("rolled-back"), Some("READY"), Some("succeeded")),
        "{r0}"
    );
    let r1 = row(&doc, &ids[1]);
    assert_eq!(r1["action"], "failed", "{r1}");
    assert!(r1["reason"].as_str().unwrap().contains("failed"), "{r1}");
    let r2 = row(&doc, &ids[2]);
    assert_eq!(r2["action"], "refused");
    assert!(
        r2["reason"].as_str().unwrap().contains(&copy)
            && r2["reason"].as_str().unwrap().contains("CopyImage"),
        "{r2}"
    );
    let r3 = row(&doc, &ids[3]);
    assert_eq!(r3["action"], "refused");
    assert!(r3["reason"].as_str().unwrap().contains("its name"), "{r3}");
    assert!(
        out.contains("rolled back 1 (1 READY, 0 NOT READY), failed 1, refused 2"),
        "{out}"
    );
    // Every call the rollback made is one the reference check judges
    // against its policy (tests/support/iam_check.py, run by test.sh).
    let checked = support::stage::checked_calls("restore-cleanup");
    for e in log.iter().filter(|e| e.service == "ec2") {
        assert!(
            checked.contains(&format!("ec2:{}", e.action)),
            "ec2:{} is not checked against the restore policy",
            e.action
        );
    }

    // The pending backup of another run: refused with its state.
    let (code, out, _) = prepatch_in(
        &moto,
        &s,
        &["rollback", "--run", "rb-3", "--instances", &ids[4]],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is pending") && out.contains("not available"),
        "{out}"
    );
    // An instance the run has no backup of.
    let (code, out, _) = prepatch_in(
        &moto,
        &s,
        &[
            "rollback",
            "--run",
            "rb-1",
            "--instances",
            "i-00000000000000000",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("i-00000000000000000: no backup of run rb-1"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_killed_mid_task_makes_no_second_task_and_prod_needs_yes_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 2, false, &[("Name", "db")]).await;
    let s = Scratch::new(&config("prod"));
    let (code, out, err) = prepatch_in(
        &moto,
        &s,
        &[
            "-l",
            "lza",
            "--phase",
            "ami-backup",
            "--run-id",
            "rbk-1",
            "--yes",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let mine = backups(&ec2, "rbk-1").await;

    // Prod without --yes, and no terminal to ask on: refused, nothing sent.
    moto.stage.clear_log();
    let (code, _, err) = prepatch_in(&moto, &s, &["rollback", "--run", "rbk-1", "--all"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("need confirmation (lza)") && err.contains("--yes"),
        "{err}"
    );
    assert!(tasks_asked(&moto.stage.log()).is_empty());

    // Killed while its tasks run (they take 20 s).
    moto.stage.configure(json!({"root_tasks": {"seconds": 20}}));
    let c = s.config();
    let o = s.reports();
    let mut child = prepatch_command(
        Some(&moto),
        None,
        &[
            "rollback",
            "--run",
            "rbk-1",
            "--all",
            "--yes",
            "-c",
            c.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawn");
    let began = std::time::Instant::now();
    while tasks_asked(&moto.stage.log()).len() < 2 {
        assert!(began.elapsed().as_secs() < 60, "no tasks asked for");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    // Run again: it waits for the two tasks it made, and makes none.
    moto.stage.clear_log();
    let (code, out, err) =
        prepatch_in(&moto, &s, &["rollback", "--run", "rbk-1", "--all", "--yes"]);
    println!("rollback after SIGKILL:\n{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(tasks_asked(&moto.stage.log()).is_empty(), "no second task");
    let doc = rollback_json(&out);
    for id in &ids {
        let r = row(&doc, id);
        assert_eq!(r["action"], "rolled-back", "{r}");
        assert_eq!(r["verdict"], "READY", "{r}");
        assert_eq!(r["ami"], mine[id].as_str());
    }
    // And once more, all done: nothing to wait for, nothing made.
    moto.stage.clear_log();
    let (code, out, _) = prepatch_in(&moto, &s, &["rollback", "--run", "rbk-1", "--all", "--yes"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rolled back already"), "{out}");
    assert!(tasks_asked(&moto.stage.log()).is_empty());
}
