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

/// `prepatch landing-zones`: what a config with the original tool's
/// inventory files resolves to, touching nothing: the same account listed
/// under nonprod and prod is one landing zone, guarded as prod, with a
/// warning naming both files; a preprod file gives preprod landing zones.
#[test]
fn landing_zones_lists_what_the_config_resolves_to_and_where_each_is_from() {
    let s = Scratch::new(
        "aws: {regions: [ap-southeast-2]}
inventory: inventory
environments:
  preprod: {confirm: true, retention_days: 7}
  nonprod: {retention_days: 3}
",
    );
    let inv = s.dir.path().join("inventory");
    std::fs::create_dir(&inv).expect("mkdir");
    for (file, text) in [
        (
            "nonprod_landing_zones.yml",
            "landing_zones:\n  - name: lz250nonprod\n    account_id: 123456789012\n    patch_enabled: true\n",
        ),
        (
            "prod_landing_zones.yml",
            "landing_zones:\n  - name: lz250nonprod\n    account_id: 123456789012\n  - name: cmsprod\n    account_id: 210987654321\n",
        ),
        (
            "preprod_landing_zones.yml",
            "landing_zones:\n  - name: fotoolspreprod\n    account_id: 345678901234\n",
        ),
    ] {
        std::fs::write(inv.join(file), text).expect("write");
    }
    let c = s.config().display().to_string();
    let out = prepatch(None, None, &["landing-zones", "-c", &c, "--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let lzs: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let by_name = |n: &str| {
        lzs.as_array()
            .expect("a list")
            .iter()
            .find(|l| l["name"] == n)
            .unwrap_or_else(|| panic!("{n} in {lzs:#}"))
            .clone()
    };
    assert_eq!(lzs.as_array().map(Vec::len), Some(3), "{lzs:#}");
    let twice = by_name("lz250nonprod");
    assert_eq!(
        (twice["environment"].as_str(), twice["confirm"].as_bool()),
        (Some("prod"), Some(true))
    );
    assert!(
        twice["from"]
            .as_str()
            .is_some_and(|f| f.contains("nonprod_landing_zones.yml")
                && f.contains("and")
                && f.contains("/prod_landing_zones.yml")),
        "{twice}"
    );
    assert!(
        stderr.contains("lz250nonprod (account 123456789012) is listed in")
            && stderr.contains("treated as prod"),
        "{stderr}"
    );
    let pre = by_name("fotoolspreprod");
    assert_eq!(pre["environment"], "preprod");
    assert_eq!(pre["confirm"], true);
    assert_eq!(pre["retention_days"], 7);
    assert_eq!(
        by_name("cmsprod")["retention_days"],
        7,
        "ami_backup's default"
    );
    // The table, for a person; selecting by environment as a run does.
    let out = prepatch(None, None, &["landing-zones", "-c", &c, "-e", "preprod"]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("fotoolspreprod") && !stdout.contains("cmsprod"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("1 landing zone(s)"), "{stdout}");
}

/// `prepatch config show`: the effective configuration, each value with
/// its file and line, inventory file, or `default`.
#[test]
fn config_show_says_where_every_value_came_from() {
    let s = Scratch::new(
        "aws:
  regions: [eu-west-1]
landing_zones:
  - name: lza
    account_id: \"111111111111\"
    environment: preprod
  - {name: lzb, account_id: \"222222222222\", environment: prod, regions: [us-east-1]}
inventory: inventory
environments:
  preprod: {confirm: true, retention_days: 9}
workflow:
  phases:
    ami_backup:
      retention_days: 4
",
    );
    let inv = s.dir.path().join("inventory");
    std::fs::create_dir(&inv).expect("mkdir");
    std::fs::write(
        inv.join("nonprod_landing_zones.yml"),
        "landing_zones:\n  - name: lzc\n    account_id: 333333333333\n",
    )
    .expect("write");
    let c = s.config().display().to_string();
    let out = prepatch(None, None, &["config", "show", "-c", &c]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    println!("{stdout}");
    for line in [
        format!("  regions: [eu-west-1]  # {c}:2"),
        "  role_name: PrePatchRole  # default".to_owned(),
        format!("  - name: lza  # {c}:4"),
        format!("    environment: preprod  # {c}:6"),
        "    # changes need confirmation: yes; backups kept 9 days".to_owned(),
        format!("    regions: [us-east-1]  # {c}:7"),
        "    regions: [eu-west-1]  # default".to_owned(),
        "nonprod_landing_zones.yml (landing_zones[0])".to_owned(),
        format!("      retention_days: 4  # {c}:14"),
        "      timeout: 1800  # default".to_owned(),
    ] {
        assert!(stdout.contains(&line), "{line:?} in:\n{stdout}");
    }
}
