//! The run journal's promises, with the real binary and the real AWS SDK
//! against a local moto server: restore stops exactly what a run started,
//! cleanup deletes only prepatch's expired AMIs and their snapshots (or one
//! run's, released now), and a
//! run killed with SIGKILL mid-backup resumes without duplicate AMIs.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2 as ec2;
use serde_json::json;
use support::*;

const A: &str = "111111111111";
const B: &str = "222222222222";

fn config() -> String {
    format!(
        "aws:
  regions: [us-east-1]
  role_name: PrePatchRole
landing_zones:
  - {{name: lz250nonprod, account_id: \"{A}\", environment: nonprod}}
  - {{name: cmsnonprod, account_id: \"{B}\", environment: nonprod}}
"
    )
}

fn paths(s: &Scratch) -> (String, String) {
    (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    )
}

async fn set_tag(ec2: &ec2::Client, id: &str, key: &str, value: &str) {
    ec2.create_tags()
        .resources(id)
        .tags(ec2::types::Tag::builder().key(key).value(value).build())
        .send()
        .await
        .expect("create tags");
}

async fn start(ec2: &ec2::Client, ids: &[String]) {
    ec2.start_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("start");
}

fn snapshot_ids(image: &ec2::types::Image) -> Vec<String> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
        .collect()
}

async fn snapshot_exists(ec2: &ec2::Client, id: &str) -> bool {
    ec2.describe_snapshots()
        .snapshot_ids(id)
        .send()
        .await
        .is_ok_and(|o| !o.snapshots().is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_stops_exactly_the_instances_the_run_started() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    // Two the run will start and restore will stop.
    let mine = launch(&ec2, 2, false, &[("Name", "batch")]).await;
    // Stopped now; after the run, someone else starts it.
    let someone = launch(&ec2, 1, false, &[("Name", "someone-elses")]).await;
    // Stopped now; after the run, another run starts it (and tags it).
    let other_run = launch(&ec2, 1, false, &[("Name", "other-run")]).await;
    // The run starts it, then its tag is changed: journal and tag disagree.
    let retagged = launch(&ec2, 1, false, &[("Name", "<script>x</script>")]).await;
    // Running all along.
    let running = launch(&ec2, 1, false, &[("Name", "web")]).await;
    let stopped: Vec<String> = mine.iter().chain(&retagged).cloned().collect();
    stop(&ec2, &stopped).await;
    let s = Scratch::new(&format!(
        "{}filters:\n  exclude_instance_ids: [{}, {}]\n",
        config(),
        someone[0],
        other_run[0]
    ));
    stop(&ec2, &someone).await;
    stop(&ec2, &other_run).await;
    let (c, o) = paths(&s);
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "-l",
            "lz250nonprod",
            "--skip-validation",
            "--run-id",
            "itest-restore",
            "-c",
            &c,
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let now = instances(&ec2).await;
    for id in &stopped {
        assert_eq!(now[id].0, "running", "the run started {id}");
    }
    start(&ec2, &someone).await;
    start(&ec2, &other_run).await;
    set_tag(&ec2, &other_run[0], "prepatch:started-by", "another-run").await;
    set_tag(&ec2, &retagged[0], "prepatch:started-by", "another-run").await;

    // --dry-run: says what it would stop, stops nothing.
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", "--run", "itest-restore", "-o", &o];
        args.extend_from_slice(extra);
        prepatch(Some(&moto), Some(&ssm), &args)
    };
    let out = restore(&["--dry-run"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("would stop 2,"), "{stdout}");
    assert!(
        instances(&ec2)
            .await
            .values()
            .all(|(state, _)| state == "running")
    );

    let out = restore(&[]);
    let (stdout, stderr) = text(&out);
    println!("restore summary:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("stopped 2, already stopped 0, left alone 1, failed 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("LEFT ALONE      {}", retagged[0]))
            && stdout.contains("not this run"),
        "{stdout}"
    );
    let now = instances(&ec2).await;
    for id in &mine {
        assert_eq!(now[id].0, "stopped", "{id} is stopped again");
        assert!(
            !now[id].1.contains_key("prepatch:started-by"),
            "{id}: the tag is removed"
        );
    }
    for id in someone
        .iter()
        .chain(&other_run)
        .chain(&retagged)
        .chain(&running)
    {
        assert_eq!(now[id].0, "running", "{id} is left alone");
    }
    assert_eq!(
        now[&other_run[0]].1["prepatch:started-by"], "another-run",
        "another run's tag is kept"
    );
    // The restore report and the journal.
    let dir = std::path::PathBuf::from(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("reports: "))
            .expect("the restore names its reports"),
    );
    assert!(
        dir.starts_with(s.reports().join("itest-restore")),
        "{dir:?}"
    );
    let csv = std::fs::read_to_string(dir.join("restore.csv")).expect("restore.csv");
    assert_eq!(
        csv.lines().filter(|l| l.contains(",stopped,")).count(),
        2,
        "{csv}"
    );
    let html = std::fs::read_to_string(dir.join("restore.html")).expect("restore.html");
    assert!(html.contains("Restore of run itest-restore"), "{html}");
    assert!(
        !html.contains("<script>") && html.contains("&lt;script&gt;x"),
        "escaped: {html}"
    );
    let xml = std::fs::read_to_string(dir.join("restore.xml")).expect("restore.xml");
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut instances = 0;
    loop {
        match reader.read_event().expect("well-formed restore.xml") {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"instance" => {
                instances += 1
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(instances, 3, "{xml}");
    let out = prepatch(None, None, &["runs", "-o", &o]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("restore") && stdout.contains("(of itest-restore)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_only_expired_prepatch_amis_and_their_snapshots() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 4, false, &[("Name", "app")]).await;
    let s = Scratch::new(&config());
    let (c, o) = paths(&s);
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "-l",
            "lz250nonprod",
            "--phase",
            "ami-backup",
            "--run-id",
            "itest-cleanup",
            "-c",
            &c,
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let amis = images(&ec2).await;
    assert_eq!(amis.len(), 4);
    let by_instance: BTreeMap<String, ec2::types::Image> = amis
        .into_iter()
        .map(|i| (tag_map(i.tags())["prepatch:instance-id"].clone(), i))
        .collect();
    let ami = |n: usize| {
        by_instance[&ids[n]]
            .image_id()
            .unwrap_or_default()
            .to_owned()
    };
    let past = "2020-01-01T00:00:00Z";
    // 0 and 1 made 30 days ago and expired (the run recorded 7 days); 2
    // made just now with its tag moved into the past, as anyone who can
    // tag it could: not due, a tag can only keep a backup longer; 3 made
    // 30 days ago and expired but forged as another tool's.
    moto.stage
        .configure(json!({"aged": {ami(0): 30, ami(1): 30, ami(3): 30}}));
    for n in 0..4 {
        set_tag(&ec2, &ami(n), "prepatch:expires-at", past).await;
    }
    set_tag(&ec2, &ami(3), "prepatch:created-by", "othertool").await;
    // An AMI without any tag, made by someone else.
    let untagged = ec2
        .create_image()
        .instance_id(&ids[2])
        .name("someone-elses-image")
        .send()
        .await
        .expect("create image")
        .image_id()
        .unwrap_or_default()
        .to_owned();
    let snaps = |n: usize| snapshot_ids(&by_instance[&ids[n]]);
    for n in 0..4 {
        assert!(!snaps(n).is_empty(), "moto gives AMIs snapshots");
    }

    let cleanup = |extra: &[&str]| {
        let mut args = vec!["cleanup", "-l", "lz250nonprod", "-c", &c, "-o", &o];
        args.extend_from_slice(extra);
        prepatch(Some(&moto), Some(&ssm), &args)
    };
    // The plan alone, then a dry run even with --yes: nothing deleted.
    for extra in [&[][..], &["--dry-run", "--yes"][..]] {
        let out = cleanup(extra);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("plan: 2 AMIs to deregister, 2 snapshots to delete"),
            "{stdout}"
        );
        assert_eq!(images(&ec2).await.len(), 5, "{extra:?} deletes nothing");
    }

    let out = cleanup(&["--yes"]);
    let (stdout, stderr) = text(&out);
    println!("cleanup summary:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("deregistered 2 of 2 due AMIs, deleted 2 of 2 snapshots"),
        "{stdout}"
    );
    let left: BTreeSet<String> = images(&ec2)
        .await
        .iter()
        .filter_map(|i| i.image_id().map(str::to_owned))
        .collect();
    assert_eq!(
        left,
        BTreeSet::from([ami(2), ami(3), untagged.clone()]),
        "the one not due by its CreationDate, the forged and the untagged AMI stay"
    );
    for n in [0, 1] {
        for snap in snaps(n) {
            assert!(!snapshot_exists(&ec2, &snap).await, "{snap} deleted");
        }
    }
    for n in [2, 3] {
        for snap in snaps(n) {
            assert!(snapshot_exists(&ec2, &snap).await, "{snap} kept");
        }
    }
    // Journaled: the cleanup's timeline has every deletion.
    let out = prepatch(None, None, &["runs", "-o", &o]);
    let (stdout, _) = text(&out);
    let id = stdout
        .lines()
        .find(|l| l.contains(" cleanup ") && l.contains("complete") && !l.contains("dry run"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the cleanup in `runs`")
        .to_owned();
    let out = prepatch(None, None, &["runs", "show", &id, "-o", &o]);
    let (stdout, _) = text(&out);
    assert_eq!(stdout.matches("DeregisterImage").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("DeleteSnapshot").count(), 2, "{stdout}");
}

/// `cleanup --run`: one run's backups released now, whatever their expiry,
/// first of one instance, then the rest; nothing of another run, no copy
/// carrying the run's tags, no untagged AMI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_of_a_run_releases_its_backups_and_nothing_else() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 3, false, &[("Name", "app")]).await;
    let s = Scratch::new(&config());
    let (c, o) = paths(&s);
    for run in ["itest-release-a", "itest-release-b"] {
        let args = [
            "-l",
            "lz250nonprod",
            "--phase",
            "ami-backup",
            "--run-id",
            run,
        ];
        let mut args = args.to_vec();
        args.extend(["-c", &c, "-o", &o]);
        let out = prepatch(Some(&moto), Some(&ssm), &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    }
    let amis = images(&ec2).await;
    assert_eq!(amis.len(), 6, "three instances, two runs");
    let of = |run: &str, n: usize| -> ec2::types::Image {
        amis.iter()
            .find(|i| {
                let t = tag_map(i.tags());
                t["prepatch:run-id"] == run && t["prepatch:instance-id"] == ids[n]
            })
            .expect("a backup")
            .clone()
    };
    // A copy of run a's backup of instance 1, with its tags, as a
    // CopyImage with CopyImageTags makes it; and someone else's AMI.
    let original = of("itest-release-a", 1);
    let copy = ec2
        .copy_image()
        .source_image_id(original.image_id().unwrap_or_default())
        .source_region("us-east-1")
        .name("copy-of-a-backup")
        .send()
        .await
        .expect("copy image")
        .image_id()
        .unwrap_or_default()
        .to_owned();
    for t in original.tags() {
        set_tag(
            &ec2,
            &copy,
            t.key().unwrap_or_default(),
            t.value().unwrap_or_default(),
        )
        .await;
    }
    let untagged = ec2
        .create_image()
        .instance_id(&ids[2])
        .name("someone-elses-image")
        .send()
        .await
        .expect("create image")
        .image_id()
        .unwrap_or_default()
        .to_owned();
    let id = |i: &ec2::types::Image| i.image_id().unwrap_or_default().to_owned();
    let left = || async {
        images(&ec2)
            .await
            .iter()
            .map(id)
            .collect::<BTreeSet<String>>()
    };
    let cleanup = |extra: &[&str]| {
        let mut args = vec!["cleanup", "--run", "itest-release-a", "-c", &c, "-o", &o];
        args.extend_from_slice(extra);
        prepatch(Some(&moto), Some(&ssm), &args)
    };

    // One instance's backup: the run's landing zones come from the journal.
    let out = cleanup(&["--instances", &ids[0], "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("deregistered 1 of 1 due AMIs"), "{stdout}");
    let now = left().await;
    assert!(!now.contains(&id(&of("itest-release-a", 0))), "{stdout}");
    assert_eq!(now.len(), 7, "only that one AMI went: {stdout}");
    for snap in snapshot_ids(&of("itest-release-a", 0)) {
        assert!(!snapshot_exists(&ec2, &snap).await, "{snap} deleted");
    }

    // The rest of the run: the plan first, then --yes.
    let out = cleanup(&[]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("plan: 2 AMIs to deregister"), "{stdout}");
    assert!(stdout.contains(&format!("LEFT ALONE {copy}")), "{stdout}");
    let out = cleanup(&["--yes"]);
    let (stdout, stderr) = text(&out);
    println!("cleanup --run summary:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("deregistered 2 of 2 due AMIs, deleted 2 of 2 snapshots"),
        "{stdout}"
    );
    let expected: BTreeSet<String> = (0..3)
        .map(|n| id(&of("itest-release-b", n)))
        .chain([copy.clone(), untagged.clone()])
        .collect();
    assert_eq!(
        left().await,
        expected,
        "run b, the copy and the untagged AMI stay"
    );
    for n in 0..3 {
        for snap in snapshot_ids(&of("itest-release-b", n)) {
            assert!(snapshot_exists(&ec2, &snap).await, "{snap} of run b kept");
        }
    }

    // A run the journal does not have needs its landing zones named.
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &["cleanup", "--run", "no-such-run", "-c", &c, "-o", &o],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--landing-zones"), "{stderr}");
}

/// Polls the journal for `CreateImage` steps that have an outcome.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_sigkill_in_the_backup_phase_makes_no_duplicate_amis() {
    // More instances per account-region than EC2's CreateImage burst (50),
    // so the backup phase is paced and lasts seconds.
    const PER_ACCOUNT: usize = 70;
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let mut fleet: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for account in [A, B] {
        let ec2 = ec2_in(&moto, account, "us-east-1").await;
        fleet.insert(
            account,
            launch(&ec2, PER_ACCOUNT as i32, false, &[("Name", "app")]).await,
        );
    }
    let s = Scratch::new(&config());
    let (c, o) = paths(&s);
    let db = s.reports().join("prepatch.db");
    let mut child = prepatch_command(
        Some(&moto),
        Some(&ssm),
        &[
            "-l",
            "lz250nonprod,cmsnonprod",
            "--skip-validation",
            "-c",
            &c,
            "-o",
            &o,
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawn prepatch");
    // Kill it once the journal shows AMIs being made.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while created_so_far(&db) < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup phase never started"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "prepatch ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let mut before = BTreeMap::new();
    for account in [A, B] {
        let ec2 = ec2_in(&moto, account, "us-east-1").await;
        before.insert(account, images(&ec2).await.len());
    }
    let made: usize = before.values().sum();
    assert!(
        made < 2 * PER_ACCOUNT,
        "killed mid-phase: {made} of {} AMIs made",
        2 * PER_ACCOUNT
    );

    // `runs` says interrupted; --resume latest continues it.
    let out = prepatch(None, None, &["runs", "-o", &o]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("interrupted"), "{stdout}");
    let out = prepatch(Some(&moto), Some(&ssm), &["--resume", "latest", "-o", &o]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let created_now = calls(&stdout, "CreateImage") as usize;
    for account in [A, B] {
        let ec2 = ec2_in(&moto, account, "us-east-1").await;
        let amis = images(&ec2).await;
        let per_instance: BTreeMap<String, usize> =
            amis.iter().fold(BTreeMap::new(), |mut m, i| {
                *m.entry(tag_map(i.tags())["prepatch:instance-id"].clone())
                    .or_default() += 1;
                m
            });
        println!(
            "resume: account {account}: AMIs expected {PER_ACCOUNT}, found {} (before the kill: {}), one per instance: {}",
            amis.len(),
            before[account],
            per_instance.values().all(|n| *n == 1)
        );
        assert_eq!(amis.len(), PER_ACCOUNT, "account {account}");
        let want: BTreeSet<&String> = fleet[account].iter().collect();
        let got: BTreeSet<&String> = per_instance.keys().collect();
        assert_eq!(got, want, "every instance backed up in {account}");
        assert!(
            per_instance.values().all(|n| *n == 1),
            "no duplicates in {account}"
        );
    }
    assert!(
        created_now <= 2 * PER_ACCOUNT - made,
        "the resume created {created_now}, with {made} made before"
    );
    let out = prepatch(None, None, &["runs", "-o", &o]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("complete"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_in_prod_needs_yes_and_a_second_run_is_locked_out() {
    const P: &str = "333333333333";
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, P, "us-east-1").await;
    let ids = launch(&ec2, 2, false, &[("Name", "db")]).await;
    stop(&ec2, &ids).await;
    let s = Scratch::new(&format!(
        "{}  - {{name: lz250prod, account_id: \"{P}\", environment: prod}}\n",
        config()
    ));
    let (c, o) = paths(&s);
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "-l",
            "lz250prod",
            "--skip-validation",
            "--yes",
            "--run-id",
            "itest-prod",
            "-c",
            &c,
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    // No terminal, no --yes: refused, nothing stopped.
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &["restore", "--run", "itest-prod", "-o", &o],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("pass --yes"),
        "{stderr}"
    );
    let now = instances(&ec2).await;
    assert!(ids.iter().all(|id| now[id].0 == "running"), "{now:?}");

    // A live lock on the landing zone (another process, alive: pid 1)
    // refuses a second run, naming the holder.
    let db = s.reports().join("prepatch.db");
    let conn = rusqlite::Connection::open(&db).expect("journal");
    conn.execute(
        // Held by another process (its own owner token) under another
        // name for the same account: the lock is the account-region's.
        "INSERT INTO account_locks (account, region, landing_zone, run_id, owner, pid, heartbeat)
         VALUES (?1, 'us-east-1', 'prod-by-another-name', 'other-run', 'another-owner', 1, '2099-01-01T00:00:00Z')",
        [P],
    )
    .expect("lock");
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &["restore", "--run", "itest-prod", "--yes", "-o", &o],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "account-region(s) 333333333333 us-east-1 (lz250prod) are in use by run other-run"
        ),
        "{stderr}"
    );
    conn.execute("DELETE FROM account_locks", [])
        .expect("unlock");
    drop(conn);

    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &["restore", "--run", "itest-prod", "--yes", "-o", &o],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("stopped 2,"), "{stdout}");
    let now = instances(&ec2).await;
    assert!(ids.iter().all(|id| now[id].0 == "stopped"), "{now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_in_the_backup_phase_is_journaled_as_interrupted_and_resumes() {
    use std::io::BufRead;

    let moto = Moto::start();
    let ssm = SsmStub::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    let ids = launch(&ec2, 60, false, &[("Name", "app")]).await;
    let s = Scratch::new(&config());
    let (c, o) = paths(&s);
    let mut child = prepatch_command(
        Some(&moto),
        Some(&ssm),
        &[
            "-l",
            "lz250nonprod",
            "--skip-validation",
            "-c",
            &c,
            "-o",
            &o,
        ],
    )
    .env("PREPATCH_LOG", "prepatch=info")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn prepatch");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, started) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("phase started") && line.contains("ami-backup") {
                let _ = tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    if started
        .recv_timeout(std::time::Duration::from_secs(60))
        .is_err()
    {
        let _ = child.kill();
        panic!("no backup phase:\n{}", reader.join().unwrap_or_default());
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let log = reader.join().expect("log");
    assert_eq!(out.status.code(), Some(130), "{log}");
    // Journal and CSV flushed: `runs` says interrupted, the CSV has every row.
    let out = prepatch(None, None, &["runs", "-o", &o]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert_eq!(s.inventory().len(), ids.len());

    let out = prepatch(Some(&moto), Some(&ssm), &["--resume", "latest", "-o", &o]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let amis = images(&ec2).await;
    let backed: BTreeSet<String> = amis
        .iter()
        .map(|i| tag_map(i.tags())["prepatch:instance-id"].clone())
        .collect();
    assert_eq!(amis.len(), ids.len(), "one AMI per instance");
    assert_eq!(backed, ids.iter().cloned().collect::<BTreeSet<_>>());
}

/// The original tool's inventory files, as they are, into a run: the
/// environment from each file's name, `patch_enabled: false` left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_inventory_files_migrate_into_a_run() {
    let moto = Moto::start();
    let ssm = SsmStub::start();
    let cms = ec2_in(&moto, "954976297051", "us-east-1").await;
    launch(&cms, 2, false, &[("Name", "cms")]).await;
    let s = Scratch::new("aws:\n  regions: [us-east-1]\n");
    let inv = s.dir.path().join("inventory");
    std::fs::create_dir_all(&inv).unwrap();
    std::fs::write(
        inv.join("nonprod_landing_zones.yml"),
        "landing_zones:
  - name: cmsnonprod
    account_id: 954976297051
    patch_enabled: true
  - name: lz250nonprod
    account_id: 123456789012
    patch_enabled: false
",
    )
    .unwrap();
    std::fs::write(
        inv.join("prod_landing_zones.yml"),
        "landing_zones:
  - name: cmsprod
    account_id: 210987654321
    patch_enabled: true
",
    )
    .unwrap();
    let (c, o) = paths(&s);
    let i = inv.display().to_string();
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "--scanner-only",
            "--environment",
            "nonprod",
            "--inventory",
            &i,
            "-c",
            &c,
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    println!("a run from the original inventory files:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let rows = s.inventory();
    assert_eq!(rows.len(), 2, "cmsnonprod's two instances");
    assert!(rows.iter().all(|r| r["landing_zone"] == "cmsnonprod"));
    assert!(
        stdout.contains("cmsnonprod") && !stdout.contains("lz250nonprod"),
        "patch_enabled: false is left out:\n{stdout}"
    );
    // The same file with a short bare number: a clear error, exit 2.
    std::fs::write(
        inv.join("prod_landing_zones.yml"),
        "landing_zones:\n  - {name: cmsprod, account_id: 10987654321, patch_enabled: true}\n",
    )
    .unwrap();
    let out = prepatch(
        Some(&moto),
        Some(&ssm),
        &[
            "--scanner-only",
            "-l",
            "cmsnonprod",
            "--inventory",
            &i,
            "-c",
            &c,
            "-o",
            &o,
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("prod_landing_zones.yml") && stderr.contains("quote it"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}
