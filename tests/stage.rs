//! The test stage itself (tests/support/stage.py), through the real AWS SDK:
//! what it adds to moto must read to the SDK exactly as AWS's answers do.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2 as ec2;
use aws_sdk_ssm as ssm;
use ec2::config::retry::RetryConfig;
use ec2::error::ProvideErrorMetadata;
use ec2::operation::RequestId;
use ec2::types::{Filter, InstanceStateName, ResourceType, Tag, TagSpecification};
use serde_json::json;
use support::*;

const A: &str = "111111111111";
const B: &str = "222222222222";
const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

/// The same client without retries, so a fault reaches the test.
fn no_retry(c: &ec2::Client) -> ec2::Client {
    ec2::Client::from_conf(
        c.config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

/// The error code of a call that must fail.
fn code<T, E: ProvideErrorMetadata>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => panic!("not refused"),
        Err(e) => e.code().unwrap_or_default().to_owned(),
    }
}

/// The caller's own STS client (no retries).
async fn sts(moto: &Moto) -> aws_sdk_sts::Client {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new(US))
        .credentials_provider(ec2::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    aws_sdk_sts::Client::new(&base)
}

/// SSM in `account` and `region`, reached through AssumeRole as prepatch does.
async fn ssm_in(moto: &Moto, account: &str, region: &str, retries: bool) -> ssm::Client {
    let out = sts(moto)
        .await
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/PrePatchRole"))
        .role_session_name("seed")
        .send()
        .await
        .expect("assume role");
    let c = out.credentials().expect("credentials");
    let creds = ssm::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "seed",
    );
    let retry = if retries {
        RetryConfig::standard()
    } else {
        RetryConfig::disabled()
    };
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(creds)
        .retry_config(retry)
        .load()
        .await;
    ssm::Client::new(&conf)
}

fn tags(pairs: &[(&str, &str)]) -> Vec<Tag> {
    pairs
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
        .collect()
}

fn spec(kind: ResourceType, pairs: &[(&str, &str)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags(pairs)))
        .build()
}

async fn create_image(ec2: &ec2::Client, instance: &str, name: &str) -> String {
    ec2.create_image()
        .instance_id(instance)
        .name(name)
        .send()
        .await
        .expect("create image")
        .image_id()
        .expect("image id")
        .to_owned()
}

async fn image(ec2: &ec2::Client, id: &str) -> ec2::types::Image {
    ec2.describe_images()
        .image_ids(id)
        .include_disabled(true)
        .send()
        .await
        .expect("describe image")
        .images()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no image {id}"))
}

async fn state_of(ec2: &ec2::Client, id: &str) -> InstanceStateName {
    ec2.describe_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("describe instance")
        .reservations()[0]
        .instances()[0]
        .state()
        .and_then(|s| s.name())
        .cloned()
        .expect("a state")
}

/// Waits (up to 10 s) for the instance to read `want`.
async fn wait_state(ec2: &ec2::Client, id: &str, want: InstanceStateName) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = state_of(ec2, id).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} still {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_paginated_call_comes_in_pages_the_sdk_paginators_collect() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    // Six reservations of one instance each, an AMI (and so a snapshot) of each.
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.extend(launch(&ec2, 1, n % 2 == 0, &[("Name", "paged")]).await);
    }
    for (n, id) in ids.iter().enumerate() {
        create_image(&ec2, id, &format!("paged-{n}")).await;
    }
    moto.configure(json!({"page_size": 2}));
    moto.clear_log();

    let pages = ec2
        .describe_instances()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("describe instances");
    assert_eq!(pages.len(), 3);
    let seen: Vec<String> = pages
        .iter()
        .flat_map(|p| p.reservations())
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    assert_eq!(seen, ids, "every instance once, in order");

    let pages = ec2
        .describe_images()
        .owners("self")
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("describe images");
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert_eq!(pages.iter().map(|p| p.images().len()).sum::<usize>(), 6);
    assert!(pages.iter().all(|p| p.images().len() <= 2));

    let pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("describe snapshots");
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert_eq!(
        pages.iter().map(|p| p.snapshots().len()).sum::<usize>(),
        6,
        "only the account's own snapshots (OwnerIds=self)"
    );

    let pages = ec2
        .describe_instance_status()
        .include_all_instances(true)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("describe instance status");
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert_eq!(
        pages
            .iter()
            .map(|p| p.instance_statuses().len())
            .sum::<usize>(),
        6
    );

    let ssm = ssm_in(&moto, A, US, true).await;
    let pages = ssm
        .describe_instance_information()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("describe instance information");
    assert_eq!(pages.len(), 3);
    let infos: Vec<_> = pages
        .iter()
        .flat_map(|p| p.instance_information_list())
        .collect();
    assert_eq!(infos.len(), 6);
    assert!(
        infos
            .iter()
            .all(|i| i.ping_status().map(|p| p.as_str()) == Some("Online"))
    );
    let windows = infos
        .iter()
        .filter(|i| i.platform_type().map(|p| p.as_str()) == Some("Windows"))
        .count();
    assert_eq!(windows, 3);

    // The log: each page is one request, the later ones with the stage's token.
    let calls = moto.calls("DescribeInstances");
    assert_eq!(calls.len(), 3);
    assert!(calls[0].params.get("NextToken").is_none());
    assert_eq!(calls[1].params["NextToken"], "stage-2");

    // A request's own MaxResults smaller than the page size wins; without a
    // page size it pages too (moto alone ignores it for DescribeImages).
    moto.configure(json!({}));
    let out = ec2
        .describe_images()
        .owners("self")
        .max_results(4)
        .send()
        .await
        .expect("describe images");
    assert_eq!(out.images().len(), 4);
    assert_eq!(out.next_token(), Some("stage-4"));
    // With no page size and no MaxResults, one page holds everything.
    let out = ec2.describe_instances().send().await.expect("all at once");
    assert_eq!(out.reservations().len(), 6);
    assert_eq!(out.next_token(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_parameters_are_checked_as_aws_checks_them() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 1, false, &[("Name", "stage")]).await;
    assert_eq!(
        code(ec2.describe_instances().max_results(4).send().await),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(ec2.describe_instances().max_results(1001).send().await),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(
            ec2.describe_instances()
                .instance_ids(&ids[0])
                .max_results(5)
                .send()
                .await
        ),
        "InvalidParameterCombination"
    );
    assert_eq!(
        code(ec2.describe_instances().next_token("bogus").send().await),
        "InvalidParameterValue"
    );
    let err = ec2
        .describe_snapshots()
        .snapshot_ids("snap-12345678")
        .max_results(5)
        .send()
        .await
        .expect_err("ids and MaxResults");
    assert_eq!(err.code(), Some("InvalidParameterCombination"));
    let err = ec2
        .describe_images()
        .max_results(0)
        .send()
        .await
        .expect_err("MaxResults 0");
    assert_eq!(err.code(), Some("InvalidParameterValue"));

    let ssm = ssm_in(&moto, A, US, false).await;
    let err = ssm
        .describe_instance_information()
        .max_results(4)
        .send()
        .await
        .expect_err("MaxResults 4");
    assert_eq!(err.code(), Some("ValidationException"));
    assert!(err.meta().message().is_some());
    let err = ssm
        .describe_instance_information()
        .next_token("bogus")
        .send()
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Some("InvalidNextToken"));
    let many: Vec<String> = (0..41).map(|n| format!("i-{n:017x}")).collect();
    let err = ssm
        .describe_instance_information()
        .filters(
            ssm::types::InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(many))
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect_err("41 ids");
    assert_eq!(err.code(), Some("ValidationException"));
    assert!(
        err.raw_response()
            .and_then(|r| r.headers().get("x-amzn-RequestId"))
            .is_some(),
        "errors carry a request id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_in_each_services_own_shape_and_is_logged() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 1, false, &[("Name", "stage")]).await;
    moto.configure(json!({
        "throttle": [
            {"service": "ec2", "action": "DescribeImages", "account": A, "region": US, "first": 2},
            {"service": "ssm", "action": "DescribeInstanceInformation", "first": 1},
            {"service": "sts", "action": "AssumeRole", "account": B, "first": 1},
        ]
    }));
    let bare = no_retry(&ec2);
    for _ in 0..2 {
        let err = bare
            .describe_images()
            .owners("self")
            .send()
            .await
            .expect_err("throttled");
        assert_eq!(err.code(), Some("RequestLimitExceeded"));
        assert_eq!(err.message(), Some("Request limit exceeded."));
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(503));
    }
    bare.describe_images()
        .owners("self")
        .send()
        .await
        .expect("the third goes through");
    // Other actions, accounts and regions are untouched.
    bare.describe_instances()
        .instance_ids(&ids[0])
        .send()
        .await
        .expect("another action");
    let eu = no_retry(&ec2_in(&moto, A, EU).await);
    eu.describe_images()
        .owners("self")
        .send()
        .await
        .expect("another region");

    let log = moto.calls("DescribeImages");
    let faults: Vec<_> = log.iter().map(|e| e.fault.as_deref()).collect();
    assert_eq!(faults, [Some("throttle"), Some("throttle"), None, None]);
    assert_eq!(log[0].status, 503);
    assert_eq!(log[0].account.as_deref(), Some(A));
    assert_eq!(log[0].region.as_deref(), Some(US));
    assert_eq!(log[3].region.as_deref(), Some(EU));

    let ssm = ssm_in(&moto, A, US, false).await;
    let err = ssm
        .describe_instance_information()
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Some("ThrottlingException"));
    ssm.describe_instance_information()
        .send()
        .await
        .expect("then through");

    // AssumeRole matches on the role's account, not the caller's.
    let sts = sts(&moto).await;
    let err = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{B}:role/PrePatchRole"))
        .role_session_name("x1")
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Some("Throttling"));
    sts.assume_role()
        .role_arn(format!("arn:aws:iam::{B}:role/PrePatchRole"))
        .role_session_name("x2")
        .send()
        .await
        .expect("then through");

    // A retrying SDK client rides over throttling by itself.
    moto.configure(json!({"throttle": [{"action": "DescribeImages", "first": 1}]}));
    ec2.describe_images()
        .owners("self")
        .send()
        .await
        .expect("retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_percentage_throttles_the_same_requests_every_time() {
    let moto = Moto::start();
    let ec2 = no_retry(&ec2_in(&moto, A, US).await);
    let mut runs = Vec::new();
    for _ in 0..2 {
        moto.configure(
            json!({"seed": 7, "throttle": [{"action": "DescribeRegions", "percent": 50}]}),
        );
        let mut run = Vec::new();
        for _ in 0..16 {
            run.push(ec2.describe_regions().send().await.is_err());
        }
        runs.push(run);
    }
    assert_eq!(runs[0], runs[1]);
    let hits = runs[0].iter().filter(|t| **t).count();
    assert!((3..=13).contains(&hits), "{hits} of 16 throttled at 50%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_every_answer() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    moto.configure(json!({"latency_ms": [150, 200]}));
    let t0 = Instant::now();
    ec2.describe_regions().send().await.expect("regions");
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_actions_are_refused_as_aws_refuses_them_dry_run_or_not() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 1, false, &[("Name", "stage")]).await;
    stop(&ec2, &ids).await;
    let ec2_eu = ec2_in(&moto, A, EU).await;
    let eu_ids = launch(&ec2_eu, 1, false, &[("Name", "stage")]).await;
    moto.configure(json!({
        "deny": [
            {"service": "ec2", "action": "StartInstances", "account": A, "region": US},
            {"service": "sts", "action": "AssumeRole", "account": B},
            {"service": "ssm", "action": "DescribeInstanceInformation", "region": EU},
        ]
    }));
    for dry in [false, true] {
        let err = ec2
            .start_instances()
            .instance_ids(&ids[0])
            .dry_run(dry)
            .send()
            .await
            .expect_err("denied");
        assert_eq!(err.code(), Some("UnauthorizedOperation"), "dry run {dry}");
        let msg = err.message().unwrap_or_default();
        assert!(
            msg.contains(&format!("arn:aws:sts::{A}:assumed-role/PrePatchRole/seed"))
                && msg.contains("ec2:StartInstances"),
            "{msg}"
        );
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    }
    assert_eq!(state_of(&ec2, &ids[0]).await, InstanceStateName::Stopped);
    // The same action elsewhere is allowed: a dry run says so as AWS does.
    let err = ec2_eu
        .start_instances()
        .instance_ids(&eu_ids[0])
        .dry_run(true)
        .send()
        .await
        .expect_err("dry run");
    assert_eq!(err.code(), Some("DryRunOperation"));

    let err = sts(&moto)
        .await
        .assume_role()
        .role_arn(format!("arn:aws:iam::{B}:role/PrePatchRole"))
        .role_session_name("seed")
        .send()
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Some("AccessDenied"));
    assert!(
        err.message().unwrap_or_default().contains(&format!(
            "sts:AssumeRole on resource: arn:aws:iam::{B}:role/PrePatchRole"
        )),
        "{err:?}"
    );

    let err = ssm_in(&moto, A, EU, false)
        .await
        .describe_instance_information()
        .send()
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Some("AccessDeniedException"));

    let denied: Vec<_> = moto
        .log()
        .into_iter()
        .filter(|e| e.fault.as_deref() == Some("deny"))
        .map(|e| (e.action, e.status))
        .collect();
    assert_eq!(
        denied,
        [
            ("StartInstances".to_owned(), 403),
            ("StartInstances".to_owned(), 403),
            ("AssumeRole".to_owned(), 403),
            ("DescribeInstanceInformation".to_owned(), 400),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_images_are_pending_then_available_or_failed() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 2, false, &[("Name", "stage")]).await;
    moto.configure(json!({"pending": {"image_seconds": 2}, "failed_images": [&ids[1]]}));
    let good = create_image(&ec2, &ids[0], "good-image").await;
    let bad = create_image(&ec2, &ids[1], "bad-image").await;
    for id in [&good, &bad] {
        assert_eq!(
            image(&ec2, id).await.state().map(|s| s.as_str()),
            Some("pending")
        );
    }
    // Filters agree with the state: it is moto's model that is pending.
    let pending = ec2
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("state").values("pending").build())
        .send()
        .await
        .expect("filter on state");
    assert_eq!(pending.images().len(), 2);
    let snap = image(&ec2, &good).await.block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .expect("snapshot")
        .to_owned();
    let snaps = ec2
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .expect("snapshot");
    assert_eq!(
        snaps.snapshots()[0].state().map(|s| s.as_str()),
        Some("pending")
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    for id in [&good, &bad] {
        while image(&ec2, id).await.state().map(|s| s.as_str()) == Some("pending") {
            assert!(Instant::now() < deadline, "{id} still pending");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        image(&ec2, &good).await.state().map(|s| s.as_str()),
        Some("available")
    );
    let snaps = ec2
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .expect("snapshot");
    assert_eq!(
        snaps.snapshots()[0].state().map(|s| s.as_str()),
        Some("completed")
    );
    let failed = image(&ec2, &bad).await;
    assert_eq!(failed.state().map(|s| s.as_str()), Some("failed"));
    assert!(
        failed
            .state_reason()
            .and_then(|r| r.message())
            .is_some_and(|m| !m.is_empty()),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_and_stopping_take_their_time_and_answer_as_aws() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 1, false, &[("Name", "stage")]).await;
    let id = &ids[0];
    moto.configure(json!({"pending": {"start_seconds": 2, "stop_seconds": 2}}));

    let out = ec2
        .stop_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("stop");
    let change = &out.stopping_instances()[0];
    assert_eq!(
        change.previous_state().and_then(|s| s.name()),
        Some(&InstanceStateName::Running)
    );
    assert_eq!(
        change.current_state().and_then(|s| s.name()),
        Some(&InstanceStateName::Stopping)
    );
    assert_eq!(state_of(&ec2, id).await, InstanceStateName::Stopping);
    // Starting an instance that is still stopping is refused, as by AWS.
    let err = ec2
        .start_instances()
        .instance_ids(id)
        .send()
        .await
        .expect_err("stopping");
    assert_eq!(err.code(), Some("IncorrectInstanceState"));
    wait_state(&ec2, id, InstanceStateName::Stopped).await;

    let out = ec2
        .start_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("start");
    let change = &out.starting_instances()[0];
    assert_eq!(
        change.previous_state().and_then(|s| s.name()),
        Some(&InstanceStateName::Stopped)
    );
    assert_eq!(change.previous_state().and_then(|s| s.code()), Some(80));
    assert_eq!(
        change.current_state().and_then(|s| s.name()),
        Some(&InstanceStateName::Pending)
    );
    assert_eq!(change.current_state().and_then(|s| s.code()), Some(0));
    let t0 = Instant::now();
    assert_eq!(state_of(&ec2, id).await, InstanceStateName::Pending);
    let by_filter = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .build(),
        )
        .send()
        .await
        .expect("filter");
    assert_eq!(by_filter.reservations().len(), 1);
    // SSM does not see a pending instance's agent yet.
    let ssm = ssm_in(&moto, A, US, true).await;
    let info = ssm
        .describe_instance_information()
        .send()
        .await
        .expect("ssm");
    assert_eq!(
        info.instance_information_list()[0]
            .ping_status()
            .map(|p| p.as_str()),
        Some("ConnectionLost")
    );
    wait_state(&ec2, id, InstanceStateName::Running).await;
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());

    // Starting a running instance changes nothing and says so.
    let out = ec2
        .start_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("start again");
    let change = &out.starting_instances()[0];
    assert_eq!(
        change.previous_state().and_then(|s| s.name()),
        Some(&InstanceStateName::Running)
    );
    assert_eq!(
        change.current_state().and_then(|s| s.name()),
        Some(&InstanceStateName::Running)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_play_another_actor_racing_the_caller() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 2, false, &[("Name", "stage")]).await;
    stop(&ec2, &ids).await;
    let (raced, stopped_after) = (&ids[0], &ids[1]);
    moto.configure(json!({
        "pending": {"stop_seconds": 2},
        "hooks": [
            {"when": "before", "action": "StartInstances", "account": A, "region": US,
             "do": "start", "instances": [raced]},
            {"when": "after", "action": "StartInstances", "do": "stop",
             "instances": [stopped_after]},
        ]
    }));
    // A permission probe (DryRun) is no real start: no hook fires for it.
    let err = ec2
        .start_instances()
        .instance_ids(raced)
        .dry_run(true)
        .send()
        .await
        .expect_err("dry run");
    assert_eq!(err.code(), Some("DryRunOperation"));
    assert_eq!(state_of(&ec2, raced).await, InstanceStateName::Stopped);
    let out = ec2
        .start_instances()
        .instance_ids(raced)
        .instance_ids(stopped_after)
        .send()
        .await
        .expect("start");
    let changes: BTreeMap<String, (InstanceStateName, InstanceStateName)> = out
        .starting_instances()
        .iter()
        .map(|c| {
            (
                c.instance_id().unwrap_or_default().to_owned(),
                (
                    c.previous_state().and_then(|s| s.name()).cloned().unwrap(),
                    c.current_state().and_then(|s| s.name()).cloned().unwrap(),
                ),
            )
        })
        .collect();
    // Someone started it a moment before: AWS says running -> running.
    assert_eq!(
        changes[raced],
        (InstanceStateName::Running, InstanceStateName::Running)
    );
    assert_eq!(
        changes[stopped_after],
        (InstanceStateName::Stopped, InstanceStateName::Pending)
    );
    // ... and someone stopped the other right after, through the stop window.
    assert_eq!(
        state_of(&ec2, stopped_after).await,
        InstanceStateName::Stopping
    );
    wait_state(&ec2, stopped_after, InstanceStateName::Stopped).await;

    // Each hook fires once by default.
    ec2.start_instances()
        .instance_ids(stopped_after)
        .send()
        .await
        .expect("start again");
    assert_eq!(
        state_of(&ec2, stopped_after).await,
        InstanceStateName::Running
    );

    let log: Vec<(String, String)> = moto
        .log()
        .into_iter()
        .filter(|e| e.service == "stage" || e.action == "StartInstances")
        .map(|e| (e.service, e.action))
        .collect();
    let expected = [
        ("ec2", "StartInstances"),
        ("ec2", "StartInstances"),
        ("stage", "hook:start"),
        ("stage", "hook:stop"),
        ("ec2", "StartInstances"),
    ];
    assert_eq!(log, expected.map(|(s, a)| (s.to_owned(), a.to_owned())),);
    let hook = moto.calls("hook:start").remove(0);
    assert_eq!(hook.account.as_deref(), Some(A));
    assert_eq!(hook.region.as_deref(), Some(US));
    assert_eq!(hook.params["instances"], json!([raced]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_image_tags_snapshots_and_refuses_a_duplicate_name() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 2, false, &[("Name", "stage")]).await;
    let out = ec2
        .create_image()
        .instance_id(&ids[0])
        .name("backup-1")
        .tag_specifications(spec(ResourceType::Image, &[("prepatch:run", "r1")]))
        .tag_specifications(spec(
            ResourceType::Snapshot,
            &[("prepatch:run", "r1"), ("kind", "snap")],
        ))
        .send()
        .await
        .expect("create image with a snapshot tag specification");
    let ami = image(&ec2, out.image_id().expect("id")).await;
    assert_eq!(
        tag_map(ami.tags()),
        BTreeMap::from([("prepatch:run".to_owned(), "r1".to_owned())])
    );
    let snap = ami.block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .expect("snapshot");
    let snaps = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(Filter::builder().name("tag:kind").values("snap").build())
        .send()
        .await
        .expect("snapshots by tag");
    assert_eq!(snaps.snapshots().len(), 1);
    assert_eq!(snaps.snapshots()[0].snapshot_id(), Some(snap));
    assert_eq!(
        tag_map(snaps.snapshots()[0].tags()),
        BTreeMap::from([
            ("kind".to_owned(), "snap".to_owned()),
            ("prepatch:run".to_owned(), "r1".to_owned()),
        ])
    );

    let err = ec2
        .create_image()
        .instance_id(&ids[1])
        .name("backup-1")
        .send()
        .await
        .expect_err("duplicate name");
    assert_eq!(err.code(), Some("InvalidAMIName.Duplicate"));
    // A real request id (moto writes the literal "request-id").
    let rid = err.request_id().expect("a request id").to_owned();
    assert_eq!(rid.len(), 36, "{rid}");
    assert!(
        String::from_utf8_lossy(err.raw_response().unwrap().body().bytes().unwrap())
            .contains(&format!("<RequestID>{rid}</RequestID>"))
    );
    assert!(
        err.message()
            .unwrap_or_default()
            .contains(ami.image_id().unwrap()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    // Another account, or the same name once deregistered, is fine.
    let b = ec2_in(&moto, B, US).await;
    let b_ids = launch(&b, 1, false, &[("Name", "stage")]).await;
    create_image(&b, &b_ids[0], "backup-1").await;
    ec2.deregister_image()
        .image_id(ami.image_id().unwrap())
        .send()
        .await
        .expect("deregister");
    create_image(&ec2, &ids[1], "backup-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_name_their_source_and_copies_can_keep_tags() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 1, false, &[("Name", "stage")]).await;
    let ami = create_image(&ec2, &ids[0], "source-image").await;
    ec2.create_tags()
        .resources(&ami)
        .set_tags(Some(tags(&[("team", "ops")])))
        .send()
        .await
        .expect("tag");
    let made = image(&ec2, &ami).await;
    // AWS's answer for a CreateImage AMI: the instance it was made from,
    // and its ancestry, the AMI the instance was launched from (API
    // reference, `Image`; EC2 user guide, "AMI ancestry").
    assert_eq!(made.source_instance_id(), Some(ids[0].as_str()));
    let launched_from = ec2
        .describe_instances()
        .instance_ids(&ids[0])
        .send()
        .await
        .expect("describe")
        .reservations()[0]
        .instances()[0]
        .image_id()
        .expect("launch AMI")
        .to_owned();
    assert_eq!(made.source_image_id(), Some(launched_from.as_str()));
    assert_eq!(made.source_image_region(), Some(US));

    let ec2_eu = ec2_in(&moto, A, EU).await;
    let copy = ec2_eu
        .copy_image()
        .source_image_id(&ami)
        .source_region(US)
        .name("copy-with-tags")
        .copy_image_tags(true)
        .send()
        .await
        .expect("copy")
        .image_id()
        .expect("id")
        .to_owned();
    let copied = image(&ec2_eu, &copy).await;
    assert_eq!(copied.source_image_id(), Some(ami.as_str()));
    assert_eq!(copied.source_image_region(), Some(US));
    assert_eq!(copied.source_instance_id(), None);
    assert_eq!(
        tag_map(copied.tags()),
        BTreeMap::from([("team".to_owned(), "ops".to_owned())])
    );

    let plain = ec2_eu
        .copy_image()
        .source_image_id(&ami)
        .source_region(US)
        .name("copy-without-tags")
        .send()
        .await
        .expect("copy")
        .image_id()
        .expect("id")
        .to_owned();
    assert!(image(&ec2_eu, &plain).await.tags().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_images_hide_unless_asked_for() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 1, false, &[("Name", "stage")]).await;
    let keep = create_image(&ec2, &ids[0], "kept").await;
    let off = create_image(&ec2, &ids[0], "disabled").await;
    ec2.disable_image()
        .image_id(&off)
        .send()
        .await
        .expect("disable");
    let listed =
        |out: ec2::operation::describe_images::DescribeImagesOutput| -> Vec<(String, String)> {
            let mut v: Vec<_> = out
                .images()
                .iter()
                .map(|i| {
                    (
                        i.image_id().unwrap_or_default().to_owned(),
                        i.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                    )
                })
                .collect();
            v.sort();
            v
        };
    let default = ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect("images");
    assert_eq!(listed(default), [(keep.clone(), "available".to_owned())]);
    let all = ec2
        .describe_images()
        .owners("self")
        .include_disabled(true)
        .send()
        .await
        .expect("images");
    let mut want = vec![
        (keep.clone(), "available".to_owned()),
        (off.clone(), "disabled".to_owned()),
    ];
    want.sort();
    assert_eq!(listed(all), want);
    ec2.enable_image()
        .image_id(&off)
        .send()
        .await
        .expect("enable");
    let default = ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect("images");
    assert_eq!(listed(default).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssm_instance_information_follows_moto_and_the_configuration() {
    let moto = Moto::start();
    let ec2 = ec2_in(&moto, A, US).await;
    let ids = launch(&ec2, 8, false, &[("Name", "stage")]).await;
    stop(&ec2, &ids[6..7]).await;
    terminate(&ec2, &ids[7..8]).await;
    // Another account and region: not seen from this one.
    launch(&ec2_in(&moto, B, US).await, 2, false, &[("Name", "stage")]).await;
    launch(&ec2_in(&moto, A, EU).await, 2, false, &[("Name", "stage")]).await;
    moto.configure(json!({
        "page_size": 2,
        "ssm": {"pings": {&ids[1]: "Inactive"}, "absent": [&ids[2]]},
    }));
    let ssm = ssm_in(&moto, A, US, true).await;
    let pings = |pages: Vec<
        ssm::operation::describe_instance_information::DescribeInstanceInformationOutput,
    >|
     -> BTreeMap<String, String> {
        pages
            .iter()
            .flat_map(|p| p.instance_information_list())
            .map(|i| {
                (
                    i.instance_id().unwrap_or_default().to_owned(),
                    i.ping_status()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default(),
                )
            })
            .collect()
    };
    let pages = ssm
        .describe_instance_information()
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("all pages");
    assert_eq!(pages.len(), 3);
    assert!(
        pages[0].instance_information_list()[0]
            .last_ping_date_time()
            .is_some()
    );
    let all = pings(pages);
    let mut want: BTreeMap<String, String> = ids[..7]
        .iter()
        .map(|i| (i.clone(), "Online".to_owned()))
        .collect();
    want.insert(ids[1].clone(), "Inactive".to_owned());
    want.remove(&ids[2]);
    want.insert(ids[6].clone(), "ConnectionLost".to_owned());
    assert_eq!(all, want);

    let filter = ssm::types::InstanceInformationStringFilter::builder()
        .key("InstanceIds")
        .values(&ids[0])
        .values(&ids[6])
        .values(&ids[7])
        .values("i-00000000000000000")
        .build()
        .expect("filter");
    let pages = ssm
        .describe_instance_information()
        .filters(filter)
        .max_results(5)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .expect("filtered");
    assert_eq!(
        pings(pages),
        BTreeMap::from([
            (ids[0].clone(), "Online".to_owned()),
            (ids[6].clone(), "ConnectionLost".to_owned()),
        ])
    );
    let calls = moto.calls("DescribeInstanceInformation");
    assert_eq!(calls.last().unwrap().params["MaxResults"], 5);
    assert!(
        calls
            .iter()
            .all(|c| c.service == "ssm" && c.account.as_deref() == Some(A))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_names_account_and_region_and_control_calls_stay_out() {
    let moto = Moto::start();
    let a_us = ec2_in(&moto, A, US).await;
    let b_eu = ec2_in(&moto, B, EU).await;
    moto.clear_log();
    let out = a_us.describe_regions().send().await.expect("a");
    assert_eq!(out.request_id().map(str::len), Some(36));
    b_eu.describe_regions().send().await.expect("b");
    moto.configure(json!({}));
    let log = moto.log();
    let seen: Vec<_> = log
        .iter()
        .map(|e| {
            (
                e.service.as_str(),
                e.action.as_str(),
                e.account.as_deref(),
                e.region.as_deref(),
                e.status,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("ec2", "DescribeRegions", Some(A), Some(US), 200),
            ("ec2", "DescribeRegions", Some(B), Some(EU), 200),
        ]
    );
    assert!(log[0].t <= log[1].t);
    assert!(log.iter().all(|e| e.fault.is_none()));
    // AssumeRole is logged with the caller's account and the role asked for;
    // no secret is logged.
    ec2_in(&moto, A, US).await;
    let assume = moto.calls("AssumeRole").remove(0);
    assert_eq!(assume.service, "sts");
    assert_eq!(assume.account.as_deref(), Some("123456789012"));
    assert_eq!(
        assume.params["RoleArn"],
        format!("arn:aws:iam::{A}:role/PrePatchRole")
    );
    let text =
        serde_json::to_string(&moto.log().iter().map(|e| &e.params).collect::<Vec<_>>()).unwrap();
    assert!(!text.to_ascii_lowercase().contains("signature"), "{text}");
}
