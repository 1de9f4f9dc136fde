//! Bad input: each gets exit code 2 and one clear line naming the fix.

mod support;

use support::{Scratch, prepatch, text};

const GOOD: &str = "landing_zones:
  - {name: lz250nonprod, account_id: \"111111111111\", environment: nonprod}
  - {name: cmsnonprod, account_id: \"222222222222\", environment: nonprod}
  - {name: lz250prod, account_id: \"333333333333\", environment: prod}
";

/// Runs with `config` and `args`; returns (exit code, stderr).
fn fails(config: &str, args: &[&str]) -> (i32, String) {
    let s = Scratch::new(config);
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let mut all = vec!["-c", c.as_str(), "-o", o.as_str()];
    all.extend_from_slice(args);
    let out = prepatch(None, None, &all);
    let (_, stderr) = text(&out);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn unknown_landing_zone_lists_the_known_ones() {
    let (code, err) = fails(GOOD, &["-l", "lz999"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown landing zone \"lz999\"")
            && err.contains("lz250nonprod, cmsnonprod, lz250prod"),
        "{err}"
    );
}

#[test]
fn hostile_landing_zone_name_is_refused() {
    let (code, err) = fails(GOOD, &["-l", "../../etc;rm -rf"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a landing zone name"), "{err}");
}

#[test]
fn malformed_yaml_gives_line_and_column() {
    let (code, err) = fails("landing_zones:\n  - name: [oops\n", &["-l", "x"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("config.yml:3:") && err.contains("malformed YAML"),
        "{err}"
    );
}

#[test]
fn missing_config_names_the_path_and_the_example() {
    let out = prepatch(None, None, &["-c", "/nonexistent/prepatch.yml", "-l", "x"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("/nonexistent/prepatch.yml not found")
            && err.contains("prepatch_config.example.yml"),
        "{err}"
    );
}

#[test]
fn invalid_account_id_names_field_and_value() {
    let (code, err) = fails(
        &GOOD.replace("222222222222", "12345"),
        &["-l", "cmsnonprod"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("landing_zones[1].account_id: \"12345\" is not a 12-digit account id"),
        "{err}"
    );
}

#[test]
fn unknown_key_suggests_the_right_one() {
    let (code, err) = fails(
        &format!("{GOOD}workflow:\n  phases:\n    ami_backup:\n      retention_dayz: 3\n"),
        &["-l", "cmsnonprod"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("workflow.phases.ami_backup")
            && err.contains("did you mean `retention_days`?"),
        "{err}"
    );
}

#[test]
fn environment_mismatch_is_an_error() {
    let (code, err) = fails(GOOD, &["-l", "lz250prod", "-e", "nonprod"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("landing zone lz250prod is prod, not nonprod"),
        "{err}"
    );
}

#[test]
fn no_selection_says_how_to_select() {
    let (code, err) = fails(GOOD, &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--landing-zones") && err.contains("--environment"),
        "{err}"
    );
}

#[test]
fn bad_run_id_and_bad_flags_are_usage_errors() {
    let (code, err) = fails(GOOD, &["-l", "cmsnonprod", "--run-id", "a/b"]);
    assert_eq!(code, 2);
    assert!(err.contains("--run-id"), "{err}");
    let (code, err) = fails(
        GOOD,
        &[
            "--scanner-only",
            "--phase",
            "validation",
            "-l",
            "cmsnonprod",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, _) = fails(GOOD, &["--no-such-flag"]);
    assert_eq!(code, 2);
}

#[test]
fn help_and_version_work() {
    let out = prepatch(None, None, &["--help"]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("--landing-zones") && stdout.contains("Exit codes"),
        "{stdout}"
    );
    let out = prepatch(None, None, &["--version"]);
    assert!(text(&out).0.starts_with("prepatch "));
}

#[test]
fn demo_runs_the_whole_workflow_and_says_it_is_simulated() {
    let s = Scratch::new(GOOD);
    let o = s.reports().display().to_string();
    let out = prepatch(None, None, &["demo", "--instances", "60", "-o", &o]);
    let (stdout, stderr) = text(&out);
    // The default demo injects faults, so some instances are NOT READY.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("SIMULATED") && stderr.contains("nothing real is touched"),
        "{stdout}\n{stderr}"
    );
    for phase in ["scanner", "ami-backup", "server-start", "validation"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(phase) && !l.contains("skipped")),
            "{phase}: {stdout}"
        );
    }
    let rows = s.inventory();
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().all(|r| r["simulated"] == "true"));
    let out = prepatch(
        None,
        None,
        &["demo", "--faults", "none", "--instances", "30", "-o", &o],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).0);
}

#[test]
fn demo_runs_a_fleet_described_in_yaml() {
    let s = Scratch::new(GOOD);
    let o = s.reports().display().to_string();
    let fleet = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fleet.yml");
    let out = prepatch(
        None,
        None,
        &["demo", "--fleet", fleet, "--faults", "none", "-o", &o],
    );
    let (stdout, stderr) = text(&out);
    // Two agents are described as lost: NOT READY, exit 1.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let rows = s.inventory();
    assert_eq!(rows.len(), 84, "{stdout}");
    let lost: Vec<_> = rows
        .iter()
        .filter(|r| r["verdict"] == "NOT READY")
        .collect();
    assert_eq!(lost.len(), 2);
    assert!(lost.iter().all(|r| r["name"] == "legacy-db"));
    assert_eq!(
        rows.iter()
            .filter(|r| r["initial_state"] == "stopped")
            .count(),
        10
    );

    std::fs::write(
        s.dir.path().join("fleet.yml"),
        "instances:\n  - {landing_zone: nope, region: us-east-1}\n",
    )
    .unwrap();
    let bad = s.dir.path().join("fleet.yml").display().to_string();
    let out = prepatch(None, None, &["demo", "--fleet", &bad, "-o", &o]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("landing zone \"nope\" is not in the config"),
        "{stderr}"
    );
}
