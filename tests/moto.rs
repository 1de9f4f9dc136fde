//! The real binary and the real AWS SDK code, over HTTP, against a local
//! moto server (accounts reached only through AssumeRole), with SSM's
//! `DescribeInstanceInformation` answered by a stub of the real protocol.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::*;

const A: &str = "111111111111";
const B: &str = "222222222222";

fn config(extra: &str) -> String {
    format!(
        "aws:
  regions: [us-east-1, eu-west-1]
  role_name: PrePatchRole
landing_zones:
  - {{name: lz250nonprod, account_id: \"{A}\", environment: nonprod}}
  - {{name: cmsnonprod, account_id: \"{B}\", environment: nonprod}}
  - {{name: lz250prod, account_id: \"333333333333\", environment: prod, regions: [us-east-1]}}
filters:
  exclude_tags:
    prepatch:skip: \"true\"
{extra}"
    )
}

/// What was seeded where: instance id -> (landing zone, account, region, state).
type Seeded = BTreeMap<String, (&'static str, &'static str, &'static str, &'static str)>;

/// 2 accounts x 2 regions, 56 live instances in mixed states and platforms,
/// plus terminated and filtered-out ones that must not appear.
async fn seed(moto: &Moto, ssm: &SsmStub) -> (Seeded, BTreeSet<String>) {
    let mut seeded = Seeded::new();
    let mut hidden = BTreeSet::new();
    for (lz, account) in [("lz250nonprod", A), ("cmsnonprod", B)] {
        for region in ["us-east-1", "eu-west-1"] {
            let ec2 = ec2_in(moto, account, region).await;
            let web = launch(&ec2, 6, false, &[("Name", "web"), ("Patch Group", "web")]).await;
            let win = launch(
                &ec2,
                4,
                true,
                &[
                    ("Name", "=HYPERLINK(\"http://x\")"),
                    ("Environment", "nonprod"),
                ],
            )
            .await;
            let stopped = launch(&ec2, 4, false, &[("Name", "batch, \"nightly\"")]).await;
            stop(&ec2, &stopped).await;
            let gone = launch(&ec2, 2, false, &[("Name", "gone")]).await;
            terminate(&ec2, &gone).await;
            let skipped = launch(&ec2, 1, false, &[("prepatch:skip", "true")]).await;
            hidden.extend(gone.into_iter().chain(skipped));
            for id in &web {
                seeded.insert(id.clone(), (lz, account, region, "running"));
                ssm.set(id, "Online");
            }
            for id in &win {
                seeded.insert(id.clone(), (lz, account, region, "running"));
                ssm.set(id, "ConnectionLost");
            }
            for id in &stopped {
                seeded.insert(id.clone(), (lz, account, region, "stopped"));
            }
        }
    }
    (seeded, hidden)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_finds_every_instance_in_its_account_and_region_via_assume_role() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let (seeded, hidden) = seed(&moto, &ssm).await;
    assert_eq!(seeded.len(), 56);
    let s = Scratch::new(&config(""));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );

    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "--scanner-only",
            "--landing-zones",
            "lz250nonprod,cmsnonprod",
            "--config",
            &c,
            "--output-dir",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    let rows = s.inventory();
    let found: BTreeMap<String, &BTreeMap<String, String>> =
        rows.iter().map(|r| (r["instance_id"].clone(), r)).collect();
    assert_eq!(rows.len(), found.len(), "an instance appears twice");
    assert_eq!(
        found.keys().cloned().collect::<BTreeSet<_>>(),
        seeded.keys().cloned().collect::<BTreeSet<_>>()
    );
    for id in &hidden {
        assert!(
            !found.contains_key(id),
            "{id} is terminated or filtered out but was listed"
        );
    }
    for (id, (lz, account, region, state)) in &seeded {
        let r = found[id];
        assert_eq!(
            (r["landing_zone"].as_str(), r["account_id"].as_str()),
            (*lz, *account),
            "{id}"
        );
        assert_eq!(r["region"], *region, "{id}");
        assert_eq!(r["state"], *state, "{id}");
        assert_eq!(r["environment"], "nonprod");
    }
    // Platform from EC2's platform field, SSM status joined by instance id.
    let by_name = |name: &'static str| rows.iter().filter(move |r| r["name"] == name);
    let hostile = || by_name("'=HYPERLINK(\"http://x\")");
    assert!(
        hostile()
            .all(|r| r["ssm_ping_status"] == "ConnectionLost" && r["environment_tag"] == "nonprod")
    );
    // moto leaves `Platform` empty for instances launched in assumed-role
    // accounts, even from its stock Windows AMI; the conversion from EC2's
    // platform fields is unit-tested in cloud::aws instead.
    assert_eq!(
        by_name("'=HYPERLINK(\"http://x\")").count(),
        16,
        "the formula was not neutralised"
    );
    assert!(by_name("web").all(|r| r["platform"] == "linux"
        && r["ssm_ping_status"] == "Online"
        && r["ssm_agent_version"] == "3.3.987.0"
        && r["patch_group"] == "web"));
    assert!(by_name("batch, \"nightly\"").all(|r| r["ssm_ping_status"] == "NotRegistered"));
    // Sorted by landing zone, region, instance id.
    let keys: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["landing_zone"].clone(),
                r["region"].clone(),
                r["instance_id"].clone(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    // One page per account-region: 4 DescribeInstances for 56 instances, not 56.
    assert_eq!(calls(&stdout, "DescribeInstances"), 4, "{stdout}");
    assert_eq!(calls(&stdout, "AssumeRole"), 2, "{stdout}");
    assert_eq!(
        calls(&stdout, "CreateImage"),
        0,
        "the scanner changed something: {stdout}"
    );
    // SSM pages at its maximum of 50: 32 registered ids -> 1 page per target.
    let st = ssm.state.lock().unwrap();
    assert_eq!(st.requests, 4);
    assert!(
        st.page_sizes.iter().all(|n| *n == 50),
        "{:?}",
        st.page_sizes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_stub_answering_500_gives_unknown_and_the_scan_goes_on() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 3, false, &[("Name", "x")]).await;
    ssm.state.lock().unwrap().fail = true;
    let s = Scratch::new(&config(""));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "--scanner-only",
            "-l",
            "lz250nonprod",
            "--region",
            "us-east-1",
            "-c",
            &c,
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let rows = s.inventory();
    assert_eq!(rows.len(), ids.len());
    assert!(
        rows.iter().all(|r| r["ssm_ping_status"] == "Unknown"),
        "{rows:?}"
    );
    assert!(stderr.contains("SSM status unknown"), "{stderr}");
    // The request id the service answered with (the stub's
    // x-amzn-RequestId header, read by the SDK) is in the message, for
    // AWS Support.
    assert!(stderr.contains("(request id stub-"), "{stderr}");
    let report = s.report_json();
    let events = report["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("SSM status unknown") && m.contains("(request id stub-"))),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_pages_through_many_registered_instances() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 120, false, &[("Name", "fleet")]).await;
    for id in &ids {
        ssm.set(id, "Online");
    }
    let s = Scratch::new(&config(""));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "--scanner-only",
            "-l",
            "lz250nonprod",
            "--region",
            "us-east-1",
            "-c",
            &c,
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let rows = s.inventory();
    assert_eq!(rows.len(), 120);
    assert!(rows.iter().all(|r| r["ssm_ping_status"] == "Online"));
    // ceil(120 / 1000) EC2 pages and ceil(120 / 50) SSM pages.
    assert_eq!(calls(&stdout, "DescribeInstances"), 1, "{stdout}");
    assert_eq!(calls(&stdout, "DescribeInstanceInformation"), 3, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_workflow_backs_up_each_instance_once_and_starts_exactly_the_stopped() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let mut stopped_ids = BTreeSet::new();
    let mut all_ids: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for account in [A, B] {
        for region in ["us-east-1", "eu-west-1"] {
            let ec2 = ec2_in(&moto, account, region).await;
            let running = launch(&ec2, 3, false, &[("Name", "app")]).await;
            let stopped = launch(&ec2, 2, true, &[("Name", "<b>win</b>")]).await;
            stop(&ec2, &stopped).await;
            for id in running.iter().chain(&stopped) {
                ssm.set(id, "Online");
            }
            stopped_ids.extend(stopped.iter().cloned());
            all_ids.insert(
                (account, region),
                running.into_iter().chain(stopped).collect(),
            );
        }
    }
    let s = Scratch::new(&config(""));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let args = [
        "-l",
        "lz250nonprod,cmsnonprod",
        "-e",
        "nonprod",
        "--run-id",
        "itest-run-1",
        "-c",
        &c,
        "-o",
        &o,
    ];

    // --dry-run first: nothing changes.
    let mut before = BTreeMap::new();
    for (account, region) in all_ids.keys() {
        before.insert(
            (*account, *region),
            instances(&ec2_in(&moto, account, region).await).await,
        );
    }
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = prepatch(Some(&moto), Some(&ssm), &dry);
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("would create 10 AMIs and start 4 stopped instances"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // EC2's DryRun answers for CreateImage, StartInstances and CreateTags
    // in each of the 4 account-regions: the only mutating calls made.
    assert!(
        stdout.contains("permissions (EC2 DryRun): 12 checks over 4 account-regions, all allowed"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(calls(&stdout, "CreateImage"), 4);
    assert_eq!(calls(&stdout, "StartInstances"), 4);
    for (account, region) in all_ids.keys() {
        let ec2 = ec2_in(&moto, account, region).await;
        assert_eq!(
            instances(&ec2).await,
            before[&(*account, *region)],
            "dry run changed {account}/{region}"
        );
        assert!(images(&ec2).await.is_empty());
    }

    // The full run.
    let out = prepatch(Some(&moto), Some(&ssm), &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(calls(&stdout, "CreateImage"), 20, "{stdout}");
    let rows = s.inventory();
    assert_eq!(rows.len(), 20);
    assert!(
        rows.iter()
            .all(|r| r["verdict"] == "READY" && r["backup_state"] == "available"),
        "{rows:#?}"
    );

    for ((account, region), ids) in &all_ids {
        let ec2 = ec2_in(&moto, account, region).await;
        let amis = images(&ec2).await;
        let mut backed_up: Vec<String> = amis
            .iter()
            .map(|i| {
                tag_map(i.tags())
                    .get("prepatch:instance-id")
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        backed_up.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(
            backed_up, want,
            "one AMI per instance in {account}/{region}"
        );
        for image in &amis {
            let tags = tag_map(image.tags());
            assert_eq!(tags["prepatch:run-id"], "itest-run-1");
            assert_eq!(tags["prepatch:created-by"], "prepatch");
            assert!(
                tags["prepatch:expires-at"]
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .is_ok()
            );
            assert!(tags["Name"].starts_with("prepatch-i-"));
            for snap in image
                .block_device_mappings()
                .iter()
                .filter_map(|m| m.ebs()?.snapshot_id())
            {
                let snaps = ec2
                    .describe_snapshots()
                    .snapshot_ids(snap)
                    .send()
                    .await
                    .expect("describe snapshots");
                let stags = tag_map(snaps.snapshots()[0].tags());
                assert_eq!(
                    stags.get("prepatch:run-id").map(String::as_str),
                    Some("itest-run-1"),
                    "snapshot {snap} untagged"
                );
            }
        }
        let now = instances(&ec2).await;
        for id in ids {
            let (state, tags) = &now[id];
            assert_eq!(state, "running", "{id}");
            let started = tags.get("prepatch:started-by").map(String::as_str);
            if stopped_ids.contains(id) {
                assert_eq!(
                    started,
                    Some("itest-run-1"),
                    "{id} was started but not tagged"
                );
            } else {
                assert_eq!(
                    started, None,
                    "{id} was running and must not be tagged as started"
                );
            }
        }
    }

    // Same run id again: no new AMI, nothing started.
    let out = prepatch(Some(&moto), Some(&ssm), &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(calls(&stdout, "CreateImage"), 0, "{stdout}");
    assert_eq!(calls(&stdout, "StartInstances"), 0, "{stdout}");
    for (account, region) in all_ids.keys() {
        assert_eq!(images(&ec2_in(&moto, account, region).await).await.len(), 5);
    }
    // Reused backups still read as available and the started ones as ours.
    let rows = s.inventory();
    assert!(rows.iter().all(|r| r["backup_state"] == "available"));
    assert_eq!(
        rows.iter()
            .filter(|r| r["started_by_run"] == "true")
            .count(),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_phases_does_what_it_says() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let stopped = launch(&ec2, 2, false, &[("Name", "s")]).await;
    stop(&ec2, &stopped).await;
    let s = Scratch::new(&config(""));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let base = [
        "-l",
        "lz250nonprod",
        "--region",
        "us-east-1",
        "-c",
        &c,
        "-o",
        &o,
    ];

    let run_id = ["--run-id", "itest-phases"];
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[&base[..], &run_id, &["--skip-start", "--skip-validation"]].concat(),
    );
    let (stdout, _) = text(&out);
    assert_eq!(calls(&stdout, "CreateImage"), 2, "{stdout}");
    assert_eq!(calls(&stdout, "StartInstances"), 0, "{stdout}");
    assert!(
        stdout.contains("server-start  skipped: --skip-start"),
        "{stdout}"
    );
    assert!(
        instances(&ec2)
            .await
            .values()
            .all(|(state, _)| state == "stopped")
    );

    // Alone, with another run id: no AMI of that run, so nothing starts.
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[&base[..], &["--phase", "server-start"]].concat(),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(calls(&stdout, "StartInstances"), 0, "{stdout}\n{stderr}");
    assert!(
        instances(&ec2)
            .await
            .values()
            .all(|(state, _)| state == "stopped")
    );

    // Alone, continuing the run that made the backups: starts.
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[&base[..], &run_id, &["--phase", "server-start"]].concat(),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(calls(&stdout, "CreateImage"), 0, "{stdout}");
    assert_eq!(calls(&stdout, "StartInstances"), 1, "{stdout}\n{stderr}");
    assert!(
        instances(&ec2)
            .await
            .values()
            .all(|(state, _)| state == "running")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prod_changes_without_yes_are_refused_when_no_terminal() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, "333333333333", "us-east-1").await;
    launch(&ec2, 2, false, &[("Name", "p")]).await;
    let s = Scratch::new(&config(""));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let out = prepatch(
        Some(&moto),
        None,
        &["-l", "lz250prod", "-e", "prod", "-c", &c, "-o", &o],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("need confirmation, lz250prod (prod)") && stderr.contains("pass --yes"),
        "{stderr}"
    );
    assert!(
        images(&ec2).await.is_empty(),
        "an AMI was made in prod without confirmation"
    );
}

/// The team's own environment: preprod landing zones from the original
/// tool's `preprod_landing_zones.yml`, selected by `--environment preprod`,
/// guarded as the config says (`confirm`), their backups kept as long as
/// their environment asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preprod_environment_is_selected_guarded_and_kept_as_the_config_says() {
    const P: &str = "444444444444";
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, P, "us-east-1").await;
    launch(&ec2, 2, false, &[("Name", "pp")]).await;
    let s = Scratch::new(&config(
        "inventory: inventory
environments:
  preprod: {confirm: true, retention_days: 10}
  nonprod: {retention_days: 3}
workflow: {phases: {ami_backup: {tags: {managed_by: CMS, cost-centre: \"4711\"}}}}
",
    ));
    let inventory = s.dir.path().join("inventory");
    std::fs::create_dir(&inventory).expect("mkdir");
    std::fs::write(
        inventory.join("preprod_landing_zones.yml"),
        format!("landing_zones:\n  - name: fotoolspreprod\n    account_id: {P}\n    patch_enabled: true\n"),
    )
    .expect("write");
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["-e", "preprod", "--skip-validation", "-c", &c, "-o", &o];
        args.extend_from_slice(extra);
        prepatch(Some(&moto), None, &args)
    };
    let out = run(&[]);
    let (stdout, stderr) = text(&out);
    println!("without --yes:\n{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("need confirmation, fotoolspreprod (preprod)")
            && stderr.contains("pass --yes"),
        "{stderr}"
    );
    assert!(images(&ec2).await.is_empty(), "nothing made without --yes");

    let out = run(&["--yes", "--run-id", "itest-preprod"]);
    let (stdout, stderr) = text(&out);
    println!("with --yes:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let amis = images(&ec2).await;
    assert_eq!(amis.len(), 2);
    for ami in &amis {
        let tags = tag_map(ami.tags());
        let created: chrono::DateTime<chrono::Utc> = ami
            .creation_date()
            .expect("created")
            .parse()
            .expect("a time");
        let expires: chrono::DateTime<chrono::Utc> =
            tags["prepatch:expires-at"].parse().expect("a time");
        let days = (expires - created).num_hours() as f64 / 24.0;
        assert!(
            (9.9..=10.1).contains(&days),
            "preprod keeps 10 days: {days}"
        );
        // The team's own tags, beside prepatch's, on the AMI and its
        // snapshot, from the same CreateImage.
        assert_eq!(
            tags.get("managed_by").map(String::as_str),
            Some("CMS"),
            "{tags:?}"
        );
        assert_eq!(tags.get("cost-centre").map(String::as_str), Some("4711"));
        let snapshot = ami.block_device_mappings()[0]
            .ebs()
            .and_then(|e| e.snapshot_id())
            .expect("a snapshot");
        let snap = ec2
            .describe_snapshots()
            .snapshot_ids(snapshot)
            .send()
            .await
            .expect("snapshot");
        let snap_tags = tag_map(snap.snapshots()[0].tags());
        assert_eq!(
            snap_tags.get("managed_by").map(String::as_str),
            Some("CMS"),
            "{snap_tags:?}"
        );
        assert_eq!(
            snap_tags.get("prepatch:created-by").map(String::as_str),
            Some("prepatch")
        );
    }
    assert!(
        moto.stage.calls("CreateTags").is_empty(),
        "no CreateTags after CreateImage: the tags come with it"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.reports().join("itest-preprod/report.json")).expect("report"),
    )
    .expect("json");
    assert_eq!(
        report["landing_zones"][0]["environment"], "preprod",
        "{report:#}"
    );
    // An environment nobody has is named with the ones there are.
    let out = prepatch(Some(&moto), None, &["-e", "qa", "-c", &c, "-o", &o]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nonprod|preprod|prod"), "{stderr}");
}

#[test]
fn unreachable_endpoint_fails_fast_with_a_clear_message() {
    let s = Scratch::new(&config(""));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let started = std::time::Instant::now();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_prepatch"));
    let out = cmd
        .args(["--scanner-only", "-l", "lz250nonprod", "-c", &c, "-o", &o])
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("lz250nonprod (111111111111): cannot assume"),
        "{stdout}"
    );
    assert!(stdout.contains("no answer from AWS"), "{stdout}");
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
}

/// Ctrl-C during validation (SIGINT): the run stops waiting, writes the CSV
/// with what it knows and exits 130; a rerun with the same run id
/// continues without a second AMI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_130_with_the_csv_written_and_a_rerun_continues() {
    use std::io::BufRead;

    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 3, false, &[("Name", "app")]).await;
    // One agent never answers: validation polls until its timeout (1 h).
    ssm.set(&ids[0], "Online");
    ssm.set(&ids[1], "Online");
    ssm.set(&ids[2], "ConnectionLost");
    let s = Scratch::new(&config("workflow: {phases: {validation: {timeout: 3600}}}"));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let args = [
        "-l",
        "lz250nonprod",
        "--region",
        "us-east-1",
        "--run-id",
        "itest-sigint",
        "-c",
        &c,
        "-o",
        &o,
    ];
    let mut child = prepatch_command(Some(&moto), Some(&ssm), &args)
        .env("PREPATCH_LOG", "prepatch=info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn prepatch");
    // Read stderr on a thread (to its end, so the pipe stays open) and
    // say when validation has started.
    let stderr = child.stderr.take().expect("stderr");
    let (started_tx, started) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("phase started") && line.contains("validation") {
                let _ = started_tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let waited = started.recv_timeout(std::time::Duration::from_secs(60));
    if waited.is_err() {
        let _ = child.kill();
        panic!(
            "validation never started:\n{}",
            reader.join().unwrap_or_default()
        );
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let log = reader.join().expect("stderr reader");
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{log}");
    assert!(stdout.contains("interrupted"), "{stdout}");

    // The CSV has every instance with its AMI: the backups are on record.
    let rows = s.inventory();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|r| r["ami_id"].starts_with("ami-")),
        "{rows:?}"
    );
    assert_eq!(images(&ec2).await.len(), 3);

    // The rerun: the agent is back; nothing is created twice.
    ssm.set(&ids[2], "Online");
    let out = prepatch(Some(&moto), Some(&ssm), &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(calls(&stdout, "CreateImage"), 0, "{stdout}");
    assert_eq!(images(&ec2).await.len(), 3);
}

/// Validation asks SSM again only about agents that were not Online: one
/// filtered request per poll instead of every page of the account-region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_asks_ssm_again_only_for_agents_not_online() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let running = launch(&ec2, 60, false, &[("Name", "app")]).await;
    let stopped = launch(&ec2, 1, false, &[("Name", "late")]).await;
    stop(&ec2, &stopped).await;
    for id in &running {
        ssm.set(id, "Online");
    }
    // Started by the run, its agent never comes back: validation waits.
    ssm.set(&stopped[0], "ConnectionLost");
    let s = Scratch::new(&config("workflow: {phases: {validation: {timeout: 12}}}"));
    let (c, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "-l",
            "lz250nonprod",
            "--region",
            "us-east-1",
            "-c",
            &c,
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("ssm: ConnectionLost after 12s"), "{stdout}");
    let state = ssm.state.lock().unwrap();
    // Scan: 61 agents at 50 a page = 2 requests; validation's first poll
    // the same; then only the one agent, with a filter.
    assert!(state.filtered_requests >= 1, "{state:?}");
    assert_eq!(state.requests, 4 + state.filtered_requests, "{state:?}");
}
