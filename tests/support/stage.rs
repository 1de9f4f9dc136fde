//! The test stage (tests/support/stage.py): moto's app wrapped in a
//! middleware that behaves like AWS — latency, throttling, refusals, pending
//! windows, small pages, SSM `DescribeInstanceInformation`, another actor
//! starting and stopping instances — configured per test over plain HTTP.
//! One per test: each binds its own port and prints it, so tests never race
//! for one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;

/// A stage process on 127.0.0.1, killed when dropped. It also exits by
/// itself when its standard input closes, so a killed test leaves no orphan.
pub struct Stage {
    child: Child,
    /// Held open for the child's life: closing it ends the stage.
    stdin: Option<ChildStdin>,
    /// `127.0.0.1:PORT`.
    addr: String,
    pub url: String,
}

/// One request the stage saw (or one hook it fired: service `stage`,
/// action `hook:start` / `hook:stop`).
#[derive(Deserialize, Debug, Clone)]
pub struct LogEntry {
    /// Arrival, in seconds since the epoch.
    pub t: f64,
    /// When the answer was ready (latency and moto's own time included);
    /// absent for the stage's hooks.
    #[serde(default)]
    pub done: Option<f64>,
    pub service: String,
    pub action: String,
    pub account: Option<String>,
    pub region: Option<String>,
    pub status: u16,
    /// `throttle` or `deny` when the stage answered in AWS's place.
    pub fault: Option<String>,
    /// The form parameters (EC2, STS) or the JSON body (SSM).
    pub params: serde_json::Value,
}

/// The test venv's Python (`PREPATCH_VENV`, else `.venv/` in the crate).
/// A missing venv is a failure, never a skip.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("PREPATCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python venv at {}: run ./test.sh (it installs the test tools into .venv/) or set PREPATCH_VENV",
        venv.display()
    );
    python
}

/// The actions `tests/support/iam_check.py` checks against the Service
/// Authorization Reference for `role` (`run`, `restore-cleanup`): every
/// call prepatch sends must be one of them, so no call escapes the check.
pub fn checked_calls(role: &str) -> std::collections::BTreeSet<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/iam_check.py");
    let out = Command::new(venv_python())
        .arg(script)
        .args(["--calls", role])
        .output()
        .expect("run iam_check.py");
    assert!(out.status.success(), "iam_check.py --calls {role} failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

impl Stage {
    /// Starts one with the venv's Python (`PREPATCH_VENV`, else `.venv/` in
    /// the crate). A missing venv is a failure, never a skip.
    pub fn start() -> Stage {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = venv_python();
        let script = root.join("tests/support/stage.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("stage stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("STAGE READY ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "the stage ({}) did not get ready: {e:?}; exit: {status:?}",
                    script.display()
                );
            }
        };
        let addr = url
            .strip_prefix("http://")
            .expect("an http:// URL")
            .to_owned();
        let stdin = child.stdin.take();
        Stage {
            child,
            stdin,
            addr,
            url,
        }
    }

    /// Replaces the whole configuration (see stage.py); also resets the
    /// rule counters and the random generator.
    pub fn configure(&self, config: serde_json::Value) {
        let (status, body) = self.request("POST", "/_stage/config", &config.to_string());
        assert_eq!(status, 200, "stage config refused: {body}");
    }

    /// The request log, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        let (status, body) = self.request("GET", "/_stage/log", "");
        assert_eq!(status, 200, "stage log: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("stage log is not a log: {e}: {body}"))
    }

    /// The logged requests for one action.
    pub fn calls(&self, action: &str) -> Vec<LogEntry> {
        self.log()
            .into_iter()
            .filter(|e| e.action == action)
            .collect()
    }

    pub fn clear_log(&self) {
        let (status, body) = self.request("POST", "/_stage/log/clear", "");
        assert_eq!(status, 200, "stage log clear: {body}");
    }

    /// A blocking HTTP/1.0 request: (status, body).
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.addr)
            .unwrap_or_else(|e| panic!("cannot reach the stage at {}: {e}", self.addr));
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("write to the stage");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read from the stage");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer from the stage: {head}"));
        (status, body.to_owned())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
