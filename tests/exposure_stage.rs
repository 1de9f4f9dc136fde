//! What prepatch exposes: the modes of the files it writes, what a hostile
//! tag value can do on the operator's terminal, in the logs and in a
//! spreadsheet, and that no log level prints a credential. The real binary
//! and SDK against moto behind the test stage (the demo for file modes).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

const A: &str = "111111111111";

fn config() -> String {
    format!(
        "aws:
  regions: [us-east-1]
landing_zones:
  - {{name: lza, account_id: \"{A}\", environment: nonprod}}
"
    )
}

/// Every file and folder under `dir`, with its mode.
fn modes(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls") {
            let e = e.expect("entry");
            let meta = e.metadata().expect("stat");
            let name = e
                .path()
                .strip_prefix(dir)
                .expect("inside")
                .display()
                .to_string();
            out.push((name, meta.permissions().mode() & 0o777, meta.is_dir()));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_demo_under_umask_022_writes_only_owner_readable_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let reports = dir.path().join("reports");
    // The umask of most runners: without care every file would be 0644.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022 && exec '{}' demo --instances 40 -o '{}'",
            env!("CARGO_BIN_EXE_prepatch"),
            reports.display()
        ))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("demo");
    assert!(out.status.code().is_some(), "{:?}", text(&out));
    let found = modes(&reports);
    println!("modes under umask 022:");
    for (name, mode, is_dir) in &found {
        println!("  {mode:04o} {name}{}", if *is_dir { "/" } else { "" });
    }
    assert_eq!(mode_of(&reports), 0o700, "the output folder");
    for (name, mode, is_dir) in &found {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{name}: {mode:04o}");
    }
    for needed in ["prepatch.db", "report.json", "inventory.csv", "report.html"] {
        assert!(
            found.iter().any(|(n, _, _)| n.ends_with(needed)),
            "{needed} written: {found:?}"
        );
    }
    assert!(
        !found.iter().any(|(n, _, _)| n.ends_with(".tmp")),
        "no temporary file left: {found:?}"
    );
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// A Name tag holding terminal controls that EC2's XML answers can carry
/// (XML 1.0 has no ESC or BEL at all, so the SDK refuses an answer holding
/// one; the 8-bit C1 controls CSI and OSC, DEL and Unicode's direction
/// overrides it does carry): a colour, a window title set through OSC, a
/// forged second log line, text reversed on screen, and a spreadsheet
/// formula.
const HOSTILE: &str = "web\u{9b}31mRED\u{9d}0;pwned\u{9c}\u{7f}\nERROR forged line \u{202e}gnp.exe\t=HYPERLINK(\"http://x\")";

/// What the terminal shows of it: every control made visible.
const SHOWN: &str =
    r"web\x9b31mRED\x9d0;pwned\x9c\x7f\nERROR forged line \u{202e}gnp.exe\t=HYPERLINK";

/// Whether `bytes` hold a control a terminal would act on (C0 but newline
/// and tab, DEL, C1 in UTF-8, or a direction override).
fn control_in(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.chars()
        .find(|c| {
            (c.is_control() && !matches!(c, '\n' | '\t'))
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .map(|c| format!("U+{:04X}", u32::from(c)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_name_tag_reaches_no_terminal_log_or_spreadsheet_raw_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 2, false, &[("Name", HOSTILE)]).await;
    stop(&ec2, &ids[..1]).await;
    // The stopped one's agent never comes back: NOT READY, with its name
    // in the failures the summary lists.
    moto.stage
        .configure(serde_json::json!({"ssm": {"absent": [ids[0].clone()]}}));
    let s = Scratch::new(&format!(
        "{}workflow: {{phases: {{validation: {{timeout: 5}}}}}}\n",
        config()
    ));
    let (c, o) = (s.config(), s.reports());
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "-l",
            "lza",
            "--run-id",
            "itest-hostile",
            "-v",
            "-c",
            c.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&out);
    println!("--- stdout\n{stdout}--- stderr\n{stderr}---");
    assert_eq!(out.status.code(), Some(1), "one NOT READY");
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert_eq!(control_in(bytes), None, "a control reached {what}");
    }
    // The value is there, made visible, and forges no line of its own.
    let all = format!("{stdout}{stderr}");
    assert!(all.contains(SHOWN), "{all}");
    assert!(
        !all.lines().any(|l| l.starts_with("ERROR forged line")),
        "{all}"
    );

    // Restore, with the same name in its report and on the terminal.
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "restore",
            "--run",
            "itest-hostile",
            "-o",
            o.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = text(&out);
    println!("--- restore stdout\n{stdout}--- stderr\n{stderr}---");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for bytes in [&out.stdout, &out.stderr] {
        assert_eq!(control_in(bytes), None);
    }
    // Spreadsheets: every CSV's cell that starts as a formula is quoted.
    let run_dir = o.join("itest-hostile");
    let mut csvs = vec![run_dir.join("inventory.csv")];
    for e in std::fs::read_dir(&run_dir).expect("ls") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            csvs.extend(
                std::fs::read_dir(&p)
                    .expect("ls")
                    .map(|e| e.expect("entry").path())
                    .filter(|p| p.extension().is_some_and(|x| x == "csv")),
            );
        }
    }
    assert!(csvs.len() >= 2, "inventory.csv and restore.csv: {csvs:?}");
    for csv in &csvs {
        let mut r = ::csv::Reader::from_path(csv).expect("csv");
        let mut names = 0;
        for row in r.records() {
            for cell in row.expect("row").iter() {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{}: {cell:?}",
                    csv.display()
                );
                names += usize::from(cell.contains("HYPERLINK"));
            }
        }
        assert!(names > 0, "{} holds the name", csv.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_level_prints_a_credential_or_a_signed_request_stage() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    launch(&ec2, 2, false, &[("Name", "app")]).await;
    let s = Scratch::new(&config());
    let (c, o) = (s.config(), s.reports());
    // The runner's own credentials, as a CI job has them, and the most
    // verbose level there is, for every library.
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let token = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKENrunnerOwnToken0123456789";
    let out = prepatch_command(
        Some(&moto),
        None,
        &[
            "-l",
            "lza",
            "--scanner-only",
            "-c",
            c.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
    )
    .env("AWS_SECRET_ACCESS_KEY", secret)
    .env("AWS_SESSION_TOKEN", token)
    .env("PREPATCH_LOG", "trace")
    .output()
    .expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.lines().count() > 100 && stderr.contains("TRACE"),
        "trace logging is on: {} lines",
        stderr.lines().count()
    );
    let all = format!("{stdout}{stderr}");
    // moto's session tokens (the assumed role's) all begin so.
    for needle in [
        secret,
        token,
        "FQoGZXIvYXdzEBYaD",
        "Signature=",
        "x-amz-security-token:",
    ] {
        assert!(!all.contains(needle), "{needle} printed");
    }
}
