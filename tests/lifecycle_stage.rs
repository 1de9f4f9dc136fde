//! What the shared command lifecycle gives `restore` and `cleanup`, as the
//! run has had it: Ctrl-C ends them with exit 130 and their reports
//! written, and while one works its lock keeps a run off its landing
//! zones. The real binary and SDK against moto behind the test stage.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const A: &str = "111111111111";
const RUN: &str = "20200101T000000Z-1401";

fn config() -> String {
    format!(
        "aws:
  regions: [us-east-1]
landing_zones:
  - {{name: lza, account_id: \"{A}\", environment: nonprod}}
"
    )
}

/// A run that backs up `n` instances and starts the `stopped` first ones.
async fn a_run(moto: &Moto, s: &Scratch, n: usize, stopped: usize) {
    let ec2 = ec2_in(moto, A, "us-east-1").await;
    let ids = launch(&ec2, n as i32, false, &[("Name", "app")]).await;
    stop(&ec2, &ids[..stopped]).await;
    let (c, o) = (s.config(), s.reports());
    let out = prepatch(
        Some(moto),
        None,
        &[
            "-l",
            "lza",
            "--run-id",
            RUN,
            "-c",
            c.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
}

fn spawn(moto: &Moto, args: &[&str]) -> Child {
    prepatch_command(Some(moto), None, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prepatch")
}

/// Waits until the stage has answered `action` at least once.
fn wait_for_call(moto: &Moto, action: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while moto.stage.calls(action).iter().all(|e| e.status != 200) {
        assert!(Instant::now() < deadline, "no {action} within 90 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ctrl-C, as a terminal sends it.
fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The child's exit code, within 60 s, and its output.
fn finish(mut child: Child) -> (i32, String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running 60 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// The one folder under `dir` whose name starts with `prefix`.
fn folder(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    assert_eq!(found.len(), 1, "{prefix}* in {}: {found:?}", dir.display());
    found.into_iter().next().unwrap()
}

/// The status the journal lists for the newest command of `kind`.
fn journal_status(moto: &Moto, s: &Scratch, kind: &str) -> String {
    let o = s.reports();
    let out = prepatch(Some(moto), None, &["runs", "-o", o.to_str().unwrap()]);
    let (stdout, _) = text(&out);
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in:\n{stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_restore_holds_its_lock_and_ctrl_c_ends_it_with_its_reports_stage() {
    let moto = Moto::start();
    let s = Scratch::new(&config());
    a_run(&moto, &s, 3, 3).await;
    // Stops take two minutes: the restore waits on them.
    moto.stage
        .configure(json!({"pending": {"stop_seconds": 120}}));
    moto.stage.clear_log();
    let o = s.reports();
    let o = o.to_str().unwrap();
    let restore = spawn(&moto, &["restore", "--run", RUN, "--yes", "-o", o]);
    wait_for_call(&moto, "StopInstances");

    // While it waits, a run over the same landing zone is refused.
    let c = s.config();
    let second = prepatch(
        Some(&moto),
        None,
        &["-l", "lza", "-c", c.to_str().unwrap(), "-o", o],
    );
    let (_, err) = text(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("lza"), "names the landing zone: {err}");
    assert!(
        moto.stage.calls("CreateImage").is_empty(),
        "the refused run sent nothing"
    );

    let began = Instant::now();
    interrupt(&restore);
    let (code, out, err) = finish(restore);
    assert_eq!(code, 130, "{out}\n{err}");
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "Ctrl-C ends the wait"
    );
    // Its reports are written, and say what was not done.
    let dir = folder(&s.reports().join(RUN), "restore-");
    for f in ["restore.csv", "restore.json", "restore.html", "restore.xml"] {
        assert!(dir.join(f).is_file(), "{f} in {}", dir.display());
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("restore.json")).unwrap()).unwrap();
    let text = report.to_string();
    assert!(text.contains("when interrupted"), "{text}");
    assert!(
        journal_status(&moto, &s, "restore").contains("interrupted"),
        "the journal says so"
    );
    // The lock went with it: a dry run over the landing zone goes ahead.
    moto.stage.configure(json!({}));
    let after = prepatch(
        Some(&moto),
        None,
        &["-l", "lza", "--dry-run", "-c", c.to_str().unwrap(), "-o", o],
    );
    assert_eq!(after.status.code(), Some(0), "{:?}", text_of(&after));
}

fn text_of(out: &std::process::Output) -> String {
    let (o, e) = text(out);
    format!("{o}\n{e}")
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_a_cleanup_between_deletions_with_its_report_stage() {
    let moto = Moto::start();
    let s = Scratch::new(&config());
    a_run(&moto, &s, 6, 0).await;
    // The backups made two days ago; each request takes a moment: Ctrl-C
    // lands between deletions.
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    moto.stage.configure(json!({
        "aged": aged_images(&ec2, 2).await,
        "latency_ms": 700,
    }));
    moto.stage.clear_log();
    let (c, o) = (s.config(), s.reports());
    let cleanup = spawn(
        &moto,
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
            o.to_str().unwrap(),
        ],
    );
    wait_for_call(&moto, "DeregisterImage");
    interrupt(&cleanup);
    let (code, out, err) = finish(cleanup);
    assert_eq!(code, 130, "{out}\n{err}");
    assert!(out.contains("not done: interrupted"), "{out}");
    let deregistered = moto
        .stage
        .calls("DeregisterImage")
        .iter()
        .filter(|e| e.status == 200)
        .count();
    assert!(
        (1..6).contains(&deregistered),
        "some AMIs, not all: {deregistered}"
    );
    moto.stage.configure(json!({}));
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    assert_eq!(images(&ec2).await.len(), 6 - deregistered);
    let dir = folder(&s.reports(), "cleanup-");
    assert!(dir.join("cleanup.json").is_file());
    assert!(journal_status(&moto, &s, "cleanup").contains("interrupted"));
}
