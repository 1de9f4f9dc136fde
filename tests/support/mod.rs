//! Test support: a moto server per test, a stub of SSM's
//! `DescribeInstanceInformation` (moto lacks it), seeding through the real
//! AWS SDK, and running the `prepatch` binary against them.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2 as ec2;

pub mod stage;

/// moto behind the test stage (`stage::Stage`), on 127.0.0.1, killed when
/// dropped. With no configuration the stage is transparent apart from what
/// it fixes to make moto answer like AWS; `moto.configure(...)` sets faults.
pub struct Moto {
    pub stage: stage::Stage,
    pub url: String,
}

impl Moto {
    /// Starts one. A missing moto is a failure, never a skip: run `./test.sh`,
    /// which installs it into .venv/, or set PREPATCH_VENV.
    pub fn start() -> Moto {
        let stage = stage::Stage::start();
        Moto {
            url: stage.url.clone(),
            stage,
        }
    }
}

impl std::ops::Deref for Moto {
    type Target = stage::Stage;

    fn deref(&self) -> &stage::Stage {
        &self.stage
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.").then_some(out)
}

/// What the SSM stub answers.
#[derive(Debug, Default)]
pub struct SsmState {
    /// Instance id -> ping status (`Online`, `ConnectionLost`, ...).
    pub pings: BTreeMap<String, String>,
    /// Answer HTTP 500 to everything.
    pub fail: bool,
    /// Requests received.
    pub requests: usize,
    /// MaxResults of each request.
    pub page_sizes: Vec<i64>,
    /// Requests with an `InstanceIds` filter.
    pub filtered_requests: usize,
}

/// A stub of SSM `DescribeInstanceInformation` speaking the real JSON 1.1
/// protocol, paginating by `MaxResults`/`NextToken` like AWS.
pub struct SsmStub {
    pub url: String,
    pub state: Arc<Mutex<SsmState>>,
}

impl SsmStub {
    pub fn start() -> SsmStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SSM stub");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(SsmState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(conn, &state));
            }
        });
        SsmStub { url, state }
    }

    pub fn set(&self, id: &str, ping: &str) {
        self.state
            .lock()
            .unwrap()
            .pings
            .insert(id.to_owned(), ping.to_owned());
    }
}

/// Serves keep-alive HTTP/1.1 requests on one connection.
fn serve(mut conn: TcpStream, state: &Mutex<SsmState>) {
    let mut buf = Vec::new();
    loop {
        // Read until the end of headers.
        let header_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < header_end + length {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&buf[header_end..header_end + length])
            .unwrap_or(serde_json::json!({}));
        buf.drain(..header_end + length);
        let target_ok = head
            .to_ascii_lowercase()
            .contains("x-amz-target: amazonssm.describeinstanceinformation");
        let (status, reply) = answer(state, &body, target_ok);
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: stub-{}\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len(),
            reply.len()
        );
        if conn.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(
    state: &Mutex<SsmState>,
    body: &serde_json::Value,
    target_ok: bool,
) -> (&'static str, String) {
    let mut s = state.lock().unwrap();
    s.requests += 1;
    if s.fail {
        return (
            "500 Internal Server Error",
            "{\"__type\":\"InternalServerError\",\"message\":\"stub failure\"}".into(),
        );
    }
    if !target_ok {
        return (
            "400 Bad Request",
            "{\"__type\":\"UnknownOperationException\"}".into(),
        );
    }
    let max = body
        .get("MaxResults")
        .and_then(|v| v.as_i64())
        .unwrap_or(10);
    s.page_sizes.push(max);
    // AWS allows 5..=50.
    if !(5..=50).contains(&max) {
        return (
            "400 Bad Request",
            format!(
                "{{\"__type\":\"ValidationException\",\"message\":\"MaxResults {max} is out of range\"}}"
            ),
        );
    }
    let start: usize = body
        .get("NextToken")
        .and_then(|v| v.as_str())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    // `Filters: [{Key: "InstanceIds", Values: [...]}]`, at most 40 values, as prepatch sends.
    let only: Option<Vec<&str>> = body
        .get("Filters")
        .and_then(|f| f.as_array())
        .and_then(|f| {
            let ids = f
                .iter()
                .find(|f| f.get("Key").and_then(|k| k.as_str()) == Some("InstanceIds"))?;
            Some(
                ids.get("Values")?
                    .as_array()?
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect(),
            )
        });
    if only
        .as_ref()
        .is_some_and(|ids| ids.is_empty() || ids.len() > 40)
    {
        return (
            "400 Bad Request",
            "{\"__type\":\"ValidationException\",\"message\":\"InstanceIds filter takes 1 to 40 values\"}".into(),
        );
    }
    s.filtered_requests += usize::from(only.is_some());
    let all: Vec<(&String, &String)> = s
        .pings
        .iter()
        .filter(|(id, _)| only.as_ref().is_none_or(|ids| ids.contains(&id.as_str())))
        .collect();
    let page: Vec<serde_json::Value> = all
        .iter()
        .skip(start)
        .take(max as usize)
        .map(|(id, ping)| {
            serde_json::json!({"InstanceId": id, "PingStatus": ping, "AgentVersion": "3.3.987.0", "PlatformType": "Linux"})
        })
        .collect();
    let mut out = serde_json::json!({ "InstanceInformationList": page });
    if start + (max as usize) < all.len() {
        out["NextToken"] = serde_json::json!((start + max as usize).to_string());
    }
    ("200 OK", out.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// EC2 in `account` and `region` on moto, reached through AssumeRole as
/// prepatch reaches it.
pub async fn ec2_in(moto: &Moto, account: &str, region: &str) -> ec2::Client {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new(region.to_owned()))
        .credentials_provider(ec2::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    let sts = aws_sdk_sts::Client::new(&base);
    let out = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/PrePatchRole"))
        .role_session_name("seed")
        .send()
        .await
        .expect("assume role on moto");
    let c = out.credentials().expect("credentials");
    let creds = ec2::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "seed",
    );
    ec2::Client::from_conf(
        ec2::config::Builder::from(&base)
            .credentials_provider(creds)
            .build(),
    )
}

pub const LINUX_AMI: &str = "ami-1e749f67";
pub const WINDOWS_AMI: &str = "ami-03cf127a";

/// Launches `n` instances with these tags; returns their ids.
pub async fn launch(
    ec2: &ec2::Client,
    n: i32,
    windows: bool,
    tags: &[(&str, &str)],
) -> Vec<String> {
    let spec = ec2::types::TagSpecification::builder()
        .resource_type(ec2::types::ResourceType::Instance)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| ec2::types::Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .build();
    let out = ec2
        .run_instances()
        .image_id(if windows { WINDOWS_AMI } else { LINUX_AMI })
        .instance_type(ec2::types::InstanceType::T3Micro)
        .min_count(n)
        .max_count(n)
        .tag_specifications(spec)
        .send()
        .await
        .expect("run instances on moto");
    out.instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect()
}

pub async fn stop(ec2: &ec2::Client, ids: &[String]) {
    ec2.stop_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("stop");
}

pub async fn terminate(ec2: &ec2::Client, ids: &[String]) {
    ec2.terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("terminate");
}

/// The successful `CreateImage` calls a run journal holds so far (0
/// while the file is not there yet): how far a backup phase has got.
pub fn created_so_far(db: &std::path::Path) -> i64 {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    c.query_row(
        "SELECT count(*) FROM steps WHERE action = 'CreateImage' AND status = 'ok'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// AMIs owned by the account, with their tags.
pub async fn images(ec2: &ec2::Client) -> Vec<ec2::types::Image> {
    ec2.describe_images()
        .owners("self")
        .send()
        .await
        .expect("describe images")
        .images()
        .to_vec()
}

/// The stage's `aged` for every AMI the account owns: made `days` days
/// ago, by AWS's `CreationDate` (cleanup measures retention from it).
pub async fn aged_images(ec2: &ec2::Client, days: u32) -> serde_json::Value {
    images(ec2)
        .await
        .iter()
        .filter_map(|i| i.image_id())
        .map(|id| (id.to_owned(), serde_json::json!(days)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Instance id -> (state, tags) of every instance.
pub async fn instances(ec2: &ec2::Client) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    let out = ec2
        .describe_instances()
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let tags = i.tags().iter().map(|t| {
                (
                    t.key().unwrap_or_default().into(),
                    t.value().unwrap_or_default().into(),
                )
            });
            (
                i.instance_id().unwrap_or_default().to_owned(),
                (
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_owned())
                        .unwrap_or_default(),
                    tags.collect(),
                ),
            )
        })
        .collect()
}

pub fn tag_map(tags: &[ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A scratch directory with a config file in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(config: &str) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.yml"), config).expect("write config");
        Scratch { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    pub fn reports(&self) -> PathBuf {
        self.dir.path().join("reports")
    }

    /// The newest run folder.
    pub fn run_dir(&self) -> PathBuf {
        std::fs::read_dir(self.reports())
            .expect("reports dir")
            .flatten()
            .map(|e| e.path())
            // Run folders only: the run journal (prepatch.db) sits beside them.
            .filter(|p| p.is_dir())
            .max()
            .expect("a run folder")
    }

    /// The newest run's report.json.
    pub fn report_json(&self) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.run_dir().join("report.json")).expect("report.json");
        serde_json::from_str(&text).expect("report.json is JSON")
    }

    /// The newest run's inventory, parsed: one map per row.
    pub fn inventory(&self) -> Vec<BTreeMap<String, String>> {
        let newest = self.run_dir();
        let mut rd = csv::Reader::from_path(newest.join("inventory.csv")).expect("inventory.csv");
        let headers = rd.headers().expect("headers").clone();
        rd.records()
            .map(|r| {
                headers
                    .iter()
                    .zip(r.expect("row").iter())
                    .map(|(h, v)| (h.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }
}

/// Runs the binary with AWS pointed at moto (and SSM at the stub).
pub fn prepatch(moto: Option<&Moto>, ssm: Option<&SsmStub>, args: &[&str]) -> Output {
    prepatch_command(moto, ssm, args)
        .output()
        .expect("run prepatch")
}

/// The binary with a clean environment that reaches only moto and the stub.
pub fn prepatch_command(moto: Option<&Moto>, ssm: Option<&SsmStub>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prepatch"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .stdin(Stdio::null());
    if let Some(m) = moto {
        cmd.env("AWS_ENDPOINT_URL", &m.url);
    }
    if let Some(s) = ssm {
        cmd.env("AWS_ENDPOINT_URL_SSM", &s.url);
    }
    cmd
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// "DescribeInstances 4" from the summary's API call line.
pub fn calls(stdout: &str, action: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("AWS API calls:"))
        .expect("API call line");
    line.split([':', ','])
        .find_map(|part| part.trim().strip_prefix(action)?.trim().parse().ok())
        .unwrap_or(0)
}
