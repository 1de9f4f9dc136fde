//! What an operator sees in a real terminal: the binary in tmux (160x45)
//! against the test stage, slow enough that its bars are live for
//! seconds, while SSM's endpoint answers with a proxy's HTML page, so that
//! warnings are logged while the bars are drawn. The whole screen, history
//! included, is captured at the end.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const A: &str = "111111111111";
const WIDTH: usize = 160;

/// An endpoint that answers every request as a misconfigured proxy would:
/// 502 and an HTML page.
struct HtmlProxy {
    url: String,
}

impl HtmlProxy {
    fn start() -> HtmlProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 65536];
                    let _ = conn.read(&mut buf);
                    let body = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><p>The proxy server received an invalid response.</p></body></html>";
                    let _ = write!(
                        conn,
                        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        HtmlProxy { url }
    }
}

/// A tmux server of the test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("prepatch-test-{}-{}", std::process::id(), free_port()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("tmux cannot run ({e}): apt-get install tmux (./test.sh does)")
            })
    }

    /// The pane's text, history included, wrapped lines joined.
    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", "t"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A script that runs the binary as the tests do, with AWS at the stage
/// and SSM at the HTML proxy.
fn script(dir: &Path, moto: &Moto, ssm: &str, args: &[&str]) -> std::path::PathBuf {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut text = String::from("#!/bin/sh\n");
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        ),
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
        ("AWS_ENDPOINT_URL_SSM", ssm),
    ] {
        text.push_str(&format!("export {k}={}\n", quote(v)));
    }
    text.push_str("unset PREPATCH_LOG\n");
    let mut line = quote(env!("CARGO_BIN_EXE_prepatch"));
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    text.push_str(&format!("{line}\necho \"__EXIT $?__\"\nsleep 600\n"));
    let path = dir.join("run.sh");
    std::fs::write(&path, text).expect("script");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bar_is_drawn_once_and_warnings_are_one_line_in_words_stage() {
    let moto = Moto::start();
    let proxy = HtmlProxy::start();
    let ec2 = ec2_in(&moto, A, "us-east-1").await;
    launch(&ec2, 6, false, &[("Name", "web")]).await;
    let stopped = launch(&ec2, 2, false, &[("Name", "batch")]).await;
    stop(&ec2, &stopped).await;
    let west = ec2_in(&moto, A, "eu-west-1").await;
    launch(&west, 4, false, &[("Name", "db")]).await;
    // Slow enough that bars are live for seconds.
    moto.stage.configure(json!({
        "latency_ms": [20, 60],
        "pending": {"image_seconds": 3, "start_seconds": 3},
    }));
    let s = Scratch::new(&format!(
        "aws:
  regions: [us-east-1, eu-west-1]
landing_zones:
  - {{name: lza, account_id: \"{A}\", environment: nonprod}}
workflow:
  phases:
    validation: {{timeout: 5}}
"
    ));
    let (c, o) = (s.config(), s.reports());
    let run = script(
        s.dir.path(),
        &moto,
        &proxy.url,
        &[
            "-l",
            "lza",
            "-c",
            c.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
    );
    let tmux = Tmux::new();
    let width = WIDTH.to_string();
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-x",
        &width,
        "-y",
        "45",
        "-s",
        "t",
        &format!("sh {}", run.display()),
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let began = Instant::now();
    let screen = loop {
        let screen = tmux.screen();
        if screen.contains("__EXIT") {
            break screen;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "no end in 2 minutes:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("the terminal at the end:\n{screen}");
    assert!(
        screen.contains("__EXIT 1__"),
        "SSM unknown: NOT READY, exit 1:\n{screen}"
    );

    // Each account-region's bar, once per phase: drawn again in place,
    // never again below a log line.
    for phase in ["scanner", "ami-backup", "server-start", "validation"] {
        for region in ["us-east-1", "eu-west-1"] {
            if phase == "server-start" && region == "eu-west-1" {
                continue; // nothing stopped there: no bar
            }
            let prefix = format!("{phase:<12} lza/{region}");
            let n = screen.lines().filter(|l| l.contains(&prefix)).count();
            assert_eq!(n, 1, "{prefix:?} drawn {n} times:\n{screen}");
        }
    }
    // Warnings in words, each within the terminal's width: a long one is
    // folded by prepatch, its further rows indented, never wrapped by the
    // terminal (a wrapped row shows here as one wider than 160).
    let rows: Vec<&str> = screen.lines().collect();
    let mut warnings: Vec<String> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let t = row.trim_start();
        if t.starts_with("WARN") || t.starts_with("ERROR") {
            assert!(
                row.chars().count() <= WIDTH,
                "a log row wider than the terminal: {row}"
            );
            let mut entry = t.to_owned();
            for more in rows[i + 1..]
                .iter()
                .take_while(|r| r.starts_with("      ") && !r.contains("====="))
            {
                assert!(
                    more.chars().count() <= WIDTH,
                    "a log row wider than the terminal: {more}"
                );
                entry.push(' ');
                entry.push_str(more.trim_start());
            }
            warnings.push(entry);
        }
    }
    assert!(!warnings.is_empty(), "the SSM failure is logged:\n{screen}");
    for w in &warnings {
        assert!(
            !w.contains("Unhandled") && !w.contains("DeserializeError"),
            "{w}"
        );
    }
    let ssm = warnings
        .iter()
        .find(|w| w.contains("SSM status unknown"))
        .unwrap_or_else(|| panic!("no SSM warning in {warnings:#?}"));
    assert!(
        ssm.contains("lza/us-east-1") || ssm.contains("lza/eu-west-1"),
        "the account-region: {ssm}"
    );
    assert!(
        ssm.contains("DescribeInstanceInformation") && ssm.contains("HTTP 502 and an HTML page"),
        "the action and what came back, in words: {ssm}"
    );
    // The summary, intact: unknown kept apart from not ok, its reason
    // once per account-region.
    let header = screen
        .lines()
        .find(|l| l.starts_with("landing zone"))
        .unwrap_or_else(|| panic!("no summary table:\n{screen}"));
    assert!(header.contains("ssm unknown"), "{header}");
    let row: Vec<&str> = screen
        .lines()
        .find(|l| l.starts_with("lza "))
        .expect("the landing zone's row")
        .split_whitespace()
        .collect();
    // landing zone, instances, running, stopped, other, ssm ok, ssm not ok, ssm unknown
    assert_eq!(
        &row[..8],
        ["lza", "12", "12", "0", "0", "0", "0", "12"],
        "{row:?}"
    );
    assert_eq!(
        screen
            .lines()
            .filter(|l| l.starts_with("ssm unknown in "))
            .count(),
        2,
        "once per account-region:\n{screen}"
    );
    assert!(screen.contains("AWS API calls:"), "{screen}");
}
