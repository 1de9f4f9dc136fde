//! A journal that cannot be used gives exit code 2 and one line naming the
//! file, never a panic.

mod support;

use support::{prepatch, text};

/// Runs the binary; returns (exit code, stderr), checking there was no panic.
fn fails(args: &[&str]) -> (i32, String) {
    let out = prepatch(None, None, args);
    let (_, stderr) = text(&out);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_missing_journal_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = dir.path().join("reports");
    let o = o.display().to_string();
    for args in [
        vec!["runs", "-o", &o],
        vec!["runs", "show", "x", "-o", &o],
        vec!["report", "--run", "x", "-o", &o],
        vec!["restore", "--run", "x", "-o", &o],
        vec!["rollback", "--run", "x", "--all", "-o", &o],
        vec!["--resume", "latest", "-o", &o],
    ] {
        let (code, err) = fails(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("no run journal at") && err.contains("prepatch.db"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn a_corrupt_journal_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("prepatch.db");
    std::fs::write(
        &db,
        "not a database, but long enough to look like a header ".repeat(40),
    )
    .expect("write");
    let j = db.display().to_string();
    let (code, err) = fails(&["runs", "--journal", &j]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "run journal {j} is not a prepatch journal or is corrupt"
        )),
        "{err}"
    );
}

#[test]
fn a_journal_from_a_newer_prepatch_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("prepatch.db");
    let c = rusqlite::Connection::open(&db).expect("sqlite");
    c.execute_batch("CREATE TABLE runs (id TEXT); PRAGMA user_version = 7;")
        .expect("newer schema");
    drop(c);
    let j = db.display().to_string();
    let (code, err) = fails(&["runs", "--journal", &j]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&j) && err.contains("newer prepatch (schema version 7"),
        "{err}"
    );
}

#[test]
fn another_database_or_a_directory_is_not_a_journal() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("other.db");
    let c = rusqlite::Connection::open(&db).expect("sqlite");
    c.execute_batch("CREATE TABLE customers (id INTEGER);")
        .expect("other db");
    drop(c);
    let j = db.display().to_string();
    let (code, err) = fails(&["runs", "--journal", &j]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&j) && err.contains("other tables"), "{err}");

    let d = dir.path().display().to_string();
    let (code, err) = fails(&["runs", "--journal", &d]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&d) && err.contains("it is a directory"),
        "{err}"
    );
}

/// The journal keeps a run in parts (the scan, then what each phase
/// changed): put back together, it makes the very same report.
#[test]
fn a_report_from_the_journal_is_the_report_the_run_wrote() {
    report_again_is_the_same(&[]);
    // Validation then waits for the AMIs, and saves the backups again.
    report_again_is_the_same(&["--no-wait-backup"]);
}

fn report_again_is_the_same(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tmp");
    let o = dir.path().join("reports").display().to_string();
    let mut args = vec![
        "demo",
        "--instances",
        "60",
        "--faults",
        "all",
        "-q",
        "-o",
        &o,
    ];
    args.extend_from_slice(extra);
    let out = prepatch(None, None, &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let run_dir = std::fs::read_dir(dir.path().join("reports"))
        .expect("reports")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a run directory");
    let id = run_dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let read = |name: &str| std::fs::read_to_string(run_dir.join(name)).expect(name);
    let (json, xml, csv) = (
        read("report.json"),
        read("report.xml"),
        read("inventory.csv"),
    );
    for f in ["report.json", "report.xml", "inventory.csv", "report.html"] {
        std::fs::remove_file(run_dir.join(f)).expect("remove");
    }
    let out = prepatch(None, None, &["report", "--run", &id, "-o", &o]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(
        parsed["totals"]["amis_created"].as_u64() > Some(0)
            && parsed["totals"]["started"].as_u64() > Some(0)
            && parsed["totals"]["not_ready"].as_u64() > Some(0),
        "a run with backups, starts and failures: {:#}",
        parsed["totals"]
    );
    assert!(json == read("report.json"), "report.json differs {extra:?}");
    assert!(xml == read("report.xml"), "report.xml differs {extra:?}");
    assert!(
        csv == read("inventory.csv"),
        "inventory.csv differs {extra:?}"
    );
}

#[test]
fn runs_lists_a_demo_and_report_rewrites_it_from_the_journal() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = dir.path().join("reports").display().to_string();
    let out = prepatch(
        None,
        None,
        &[
            "demo",
            "--instances",
            "12",
            "--faults",
            "none",
            "-q",
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let out = prepatch(None, None, &["runs", "-o", &o]);
    let (stdout, _) = text(&out);
    let line = stdout
        .lines()
        .find(|l| l.contains(" demo "))
        .unwrap_or_else(|| panic!("a demo run in:\n{stdout}"));
    assert!(line.contains("complete") && line.contains(" 12 "), "{line}");
    let id = line.split_whitespace().next().expect("id").to_owned();
    let run_dir = dir.path().join("reports").join(&id);
    std::fs::remove_file(run_dir.join("report.json")).expect("remove");
    let out = prepatch(None, None, &["report", "--run", &id, "-o", &o]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("report.json")).expect("report.json again"),
    )
    .expect("json");
    assert_eq!(json["run"]["run_id"], id.as_str(), "{json:#}");
    assert_eq!(json["instances"].as_array().map(Vec::len), Some(12));
    // A demo run is not a real fleet: no restore, no resume.
    let (code, err) = fails(&["restore", "--run", &id, "-o", &o]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("demo run"), "{err}");
    let (code, err) = fails(&["--resume", &id, "-o", &o]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = fails(&["runs", "show", "nope", "-o", &o]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no run nope"), "{err}");
}

/// A journal edited to hold a run id or a landing-zone name that prepatch
/// never writes (one that climbs out of the reports folder) is refused
/// before the id names a folder.
#[test]
fn a_journal_edited_to_hold_a_path_is_refused_before_it_names_a_folder() {
    let dir = tempfile::tempdir().expect("tmp");
    let reports = dir.path().join("reports");
    let o = reports.display().to_string();
    let out = prepatch(
        None,
        None,
        &[
            "demo",
            "--instances",
            "4",
            "--faults",
            "none",
            "-q",
            "-o",
            &o,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let db = rusqlite::Connection::open(reports.join("prepatch.db")).expect("sqlite");
    let id: String = db
        .query_row("SELECT id FROM runs", [], |r| r.get(0))
        .expect("the demo's run");
    // The saved state names the run a path out of the reports folder.
    db.execute(
        "UPDATE runs SET snapshot = json_set(snapshot, '$.id', '../../escaped')",
        [],
    )
    .expect("edit");
    let (code, err) = fails(&["report", "--run", &id, "-o", &o]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("holds the run id \"../../escaped\"") && err.contains("prepatch.db"),
        "{err}"
    );
    // The row itself, and a landing-zone name (as a hand edit would,
    // leaving its steps behind).
    db.pragma_update(None, "foreign_keys", false)
        .expect("pragma");
    db.execute("UPDATE runs SET id = '../../escaped', simulated = 0", [])
        .expect("edit");
    let (code, err) = fails(&["restore", "--run", "../../escaped", "-o", &o]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds the run id"), "{err}");
    db.execute(
        "UPDATE runs SET id = ?1, landing_zones = 'lza,../../x'",
        [&id],
    )
    .expect("edit");
    let (code, err) = fails(&["restore", "--run", &id, "-o", &o]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the landing-zone name \"../../x\""), "{err}");
    assert!(!dir.path().join("escaped").exists());
}

/// `demo --after-patch`: in the same simulated world, the NOT READY
/// instances are rolled back (a failed backup refused, a stopped instance
/// reported) and the READY ones' backups released, each recorded in the
/// journal as its own command with its reports.
#[test]
fn the_demo_rolls_back_what_is_not_ready_and_releases_the_rest() {
    let dir = tempfile::tempdir().expect("tmp");
    let o = dir.path().join("reports");
    let o = o.display().to_string();
    let out = prepatch(
        None,
        None,
        &["demo", "--instances", "60", "--after-patch", "-q", "-o", &o],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "NOT READY remain:\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {stdout}"))
            .to_owned()
    };
    let rolled = line("rolled back ");
    assert!(!rolled.starts_with("rolled back 0 "), "{rolled}");
    assert!(
        stdout.contains("refused ") && stdout.contains("is failed"),
        "the failed AMI: {stdout}"
    );
    let released = line("cleanup: deregistered");
    assert!(released.contains("0 failures"), "{released}");
    let runs = prepatch(None, None, &["runs", "-o", &o]);
    let (runs, _) = text(&runs);
    for kind in [" rollback ", " cleanup "] {
        assert!(
            runs.contains(kind) && runs.contains("(of "),
            "{kind} in runs: {runs}"
        );
    }
    let run_dir = std::fs::read_dir(&o)
        .expect("reports")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("report.json").is_file())
        .expect("the run's folder");
    let rollback_dir = std::fs::read_dir(&run_dir)
        .expect("run folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rollback-"))
        })
        .expect("a rollback folder");
    for f in [
        "rollback.csv",
        "rollback.json",
        "rollback.html",
        "rollback.xml",
    ] {
        assert!(rollback_dir.join(f).is_file(), "{f}");
    }
}
