//! Landing zones from AWS Organizations, on moto's Organizations through
//! the real SDK: an organization with nested OUs, tagged, untagged and
//! suspended accounts, and one outside the chosen OU. `prepatch
//! landing-zones` lists what the config makes of it; a run works on a
//! discovered landing zone and records it, so that a restore of the run
//! still finds it after the organization has changed.

mod support;

use aws_sdk_organizations as org;
use support::*;

async fn organizations(moto: &Moto) -> org::Client {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(org::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    org::Client::new(&base)
}

/// An account made, moved under `ou`, tagged; its id.
async fn account(
    c: &org::Client,
    name: &str,
    root: &str,
    ou: &str,
    tags: &[(&str, &str)],
) -> String {
    let made = c
        .create_account()
        .account_name(name)
        .email(format!("{}@example.com", name.replace(' ', ".")))
        .send()
        .await
        .expect("create account");
    let id = made
        .create_account_status()
        .and_then(|s| s.account_id())
        .expect("an account id")
        .to_owned();
    c.move_account()
        .account_id(&id)
        .source_parent_id(root)
        .destination_parent_id(ou)
        .send()
        .await
        .expect("move account");
    if !tags.is_empty() {
        c.tag_resource()
            .resource_id(&id)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| {
                        org::types::Tag::builder()
                            .key(*k)
                            .value(*v)
                            .build()
                            .expect("tag")
                    })
                    .collect(),
            ))
            .send()
            .await
            .expect("tag account");
    }
    id
}

async fn ou(c: &org::Client, parent: &str, name: &str) -> String {
    c.create_organizational_unit()
        .parent_id(parent)
        .name(name)
        .send()
        .await
        .expect("create OU")
        .organizational_unit()
        .and_then(|o| o.id())
        .expect("an OU id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landing_zones_come_from_the_organization_and_a_run_records_them_stage() {
    let moto = Moto::start();
    let c = organizations(&moto).await;
    c.create_organization()
        .feature_set(org::types::OrganizationFeatureSet::All)
        .send()
        .await
        .expect("create organization");
    let root = c.list_roots().send().await.expect("roots").roots()[0]
        .id()
        .expect("root id")
        .to_owned();
    // root > workloads > {nonprod, prod}; root > sandbox.
    let workloads = ou(&c, &root, "workloads").await;
    let nonprod = ou(&c, &workloads, "nonprod").await;
    let prod = ou(&c, &workloads, "prod").await;
    let sandbox = ou(&c, &root, "sandbox").await;
    let cms = account(
        &c,
        "CMS NonProd",
        &root,
        &nonprod,
        &[("patch", "yes"), ("env", "nonprod")],
    )
    .await;
    let tools = account(
        &c,
        "Tools PreProd",
        &root,
        &nonprod,
        &[("patch", "yes"), ("env", "preprod")],
    )
    .await;
    let pay = account(
        &c,
        "Payments Prod",
        &root,
        &prod,
        &[("patch", "yes"), ("env", "prod")],
    )
    .await;
    let closed = account(
        &c,
        "Old One",
        &root,
        &prod,
        &[("patch", "yes"), ("env", "prod")],
    )
    .await;
    let untagged = account(&c, "Not Patched", &root, &nonprod, &[("env", "nonprod")]).await;
    let outside = account(
        &c,
        "Sandbox",
        &root,
        &sandbox,
        &[("patch", "yes"), ("env", "nonprod")],
    )
    .await;
    c.close_account()
        .account_id(&closed)
        .send()
        .await
        .expect("close account");

    let s = Scratch::new(&format!(
        "aws: {{regions: [us-east-1]}}
environments:
  preprod: {{confirm: true}}
organizations:
  ous: [{workloads}]
  account_tags: {{patch: \"yes\"}}
  environment: tag:env
"
    ));
    let (cfg, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    moto.stage.clear_log();
    let out = prepatch(Some(&moto), None, &["landing-zones", "-c", &cfg, "--json"]);
    let (stdout, stderr) = text(&out);
    println!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let lzs: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let mut found: Vec<(String, String, String, bool)> = lzs
        .as_array()
        .expect("a list")
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or_default().to_owned(),
                l["account_id"].as_str().unwrap_or_default().to_owned(),
                l["environment"].as_str().unwrap_or_default().to_owned(),
                l["confirm"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("cms-nonprod".into(), cms.clone(), "nonprod".into(), false),
            ("payments-prod".into(), pay.clone(), "prod".into(), true),
            (
                "tools-preprod".into(),
                tools.clone(),
                "preprod".into(),
                true
            ),
        ],
        "under the OU, recursively, ACTIVE and tagged patch=yes"
    );
    for (id, why) in [
        (&closed, "its state is SUSPENDED"),
        (&untagged, "not tagged patch=yes"),
    ] {
        assert!(
            stderr.contains(&format!("passed over {id}: ")) && stderr.contains(why),
            "{stderr}"
        );
    }
    assert!(!stdout.contains(&outside), "an account outside the OU");
    // Listings only, each one the shipped reader policy allows and
    // iam_check.py judges against the Service Authorization Reference;
    // nothing in EC2.
    let checked = support::stage::checked_calls("organizations");
    let sent: std::collections::BTreeSet<String> = moto
        .stage
        .log()
        .iter()
        .map(|e| format!("{}:{}", e.service, e.action))
        .collect();
    assert!(!sent.is_empty());
    for action in &sent {
        assert!(
            checked.contains(action),
            "prepatch sent {action}, which iam_check.py does not check"
        );
    }
    assert!(
        lzs[0]["from"]
            .as_str()
            .is_some_and(|f| f.starts_with("organizations (account ")),
        "{lzs:#}"
    );

    // A run on a discovered landing zone: the role assumed in its account,
    // its instances scanned, the landing zone recorded with the run.
    let ec2 = ec2_in(&moto, &cms, "us-east-1").await;
    launch(&ec2, 2, false, &[("Name", "web")]).await;
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "-l",
            "cms-nonprod",
            "--scanner-only",
            "--run-id",
            "itest-org",
            "-c",
            &cfg,
            "-o",
            &o,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("cms-nonprod")
            && stdout.contains("2 instance(s)")
            && calls(&stdout, "ListAccountsForParent") >= 3,
        "{stdout}"
    );
    let db = rusqlite::Connection::open(s.reports().join("prepatch.db")).expect("journal");
    let params: String = db
        .query_row("SELECT params FROM runs WHERE id = 'itest-org'", [], |r| {
            r.get(0)
        })
        .expect("the run");
    let params: serde_json::Value = serde_json::from_str(&params).expect("json");
    assert!(
        params["discovered"].as_array().is_some_and(|d| d
            .iter()
            .any(|l| l["name"] == "cms-nonprod" && l["account_id"] == cms.as_str())),
        "{params:#}"
    );

    // The organization changes (the account no longer tagged for
    // patching): the run's restore still finds its landing zone, from
    // the record; a new run does not.
    c.untag_resource()
        .resource_id(&cms)
        .tag_keys("patch")
        .send()
        .await
        .expect("untag");
    let out = prepatch(
        Some(&moto),
        None,
        &["restore", "--run", "itest-org", "-c", &cfg, "-o", &o],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("restore of run itest-org"), "{stdout}");
    let out = prepatch(
        Some(&moto),
        None,
        &["-l", "cms-nonprod", "--scanner-only", "-c", &cfg, "-o", &o],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown landing zone \"cms-nonprod\""),
        "{stderr}"
    );
}

/// Discovery that AWS refuses is one clear line before anything is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_that_cannot_be_read_stops_before_anything_is_done_stage() {
    let moto = Moto::start();
    // The runner may not read the organization: AccessDeniedException
    // (Organizations API reference, ListAccounts, Errors: HTTP 400).
    moto.stage.configure(serde_json::json!({
        "deny": [{"service": "organizations", "action": "ListAccounts"}],
    }));
    let s = Scratch::new("aws: {regions: [us-east-1]}\norganizations: {environment: nonprod}\n");
    let (cfg, o) = (
        s.config().display().to_string(),
        s.reports().display().to_string(),
    );
    let out = prepatch(
        Some(&moto),
        None,
        &["--environment", "nonprod", "-c", &cfg, "-o", &o],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("organizations: cannot list the accounts: ListAccounts: ")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert!(!s.reports().join("prepatch.db").exists() || stdout.is_empty());
}
