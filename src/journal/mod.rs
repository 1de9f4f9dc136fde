//! The run journal: one SQLite file (default `<output-dir>/prepatch.db`)
//! that records every run, restore and cleanup: its parameters, the
//! scanned fleet and what each phase changed (per account-region, see
//! [`snapshot`]), and every
//! mutating AWS call as an *intent* written before the call and its
//! *outcome* written after.
//!
//! Why SQLite: one file, transactions, and a crash (even SIGKILL) loses at
//! most the outcome of the calls in flight. Their intents are on record,
//! and resume finds what they made by prepatch's tags on AWS.
//!
//! Each step is its own transaction (autocommit), in WAL mode with
//! `synchronous=FULL`, so an intent is on disk before its call is sent.
//! Simulated runs (the demo) hand their steps to a writer thread that
//! commits them in batches instead, each intent written with its outcome as
//! one row ([`Journal::relaxed`]): nothing real is at stake there.
//! The schema is versioned with `PRAGMA user_version`: a file from a newer
//! prepatch, a corrupt file, or a path that is not a database is refused
//! with one line naming the file.
//!
//! The rooms:
//! - this file: the handle, the schema, opening and upgrading a file, and
//!   the types the journal speaks in.
//! - `store`: the rows: a run beginning and finishing, each call's intent
//!   and outcome, the run's parts, and what later commands read back.
//! - `lock`: one lock per account-region, kept alive by a heartbeat
//!   ([`Journal::hold_lock`]), refusing a second run while one is alive.
//! - `writer`: the simulated runs' batching writer thread.
//! - [`Journaled`]: wraps a [`crate::cloud::Cloud`]: every mutating call
//!   through it is journaled, so the workflow's phases need no journal
//!   code of their own.
//! - [`snapshot`]: a run saved after each phase, and loaded again.

mod journaled;
mod lock;
pub mod snapshot;
mod store;
mod writer;

pub use journaled::Journaled;
pub use lock::{HEARTBEAT_EVERY, HeldLock, LockKey};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{SecondsFormat, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::config::LandingZone;
use crate::model::{InstanceId, Target};
use writer::Writer;

/// The schema this prepatch writes and understands.
pub const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,          -- run | restore | cleanup
    of_run        TEXT,                   -- restore: the run restored
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    status        TEXT NOT NULL,          -- running | complete | failed | interrupted
    landing_zones TEXT NOT NULL,          -- comma-separated
    environment   TEXT NOT NULL,          -- nonprod | prod | nonprod,prod
    params        TEXT NOT NULL,          -- JSON: what resume needs
    simulated     INTEGER NOT NULL DEFAULT 0,
    dry_run       INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 1,
    instances     INTEGER NOT NULL DEFAULT 0,
    amis          INTEGER NOT NULL DEFAULT 0,
    started       INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    summary       TEXT,                   -- restore / cleanup: one line
    snapshot      TEXT,                   -- JSON of the Run after the last phase, its
                                          -- account-regions in run_parts (v1: inline)
    meta          TEXT                    -- JSON of the report's RunMeta
);
CREATE TABLE steps (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL REFERENCES runs(id),
    at            TEXT NOT NULL,
    done_at       TEXT,
    action        TEXT NOT NULL,          -- CreateImage, StartInstances, ... or Phase
    landing_zone  TEXT NOT NULL,
    account       TEXT NOT NULL,
    region        TEXT NOT NULL,
    resources     TEXT NOT NULL,          -- space-separated ids
    detail        TEXT,
    status        TEXT NOT NULL,          -- intent | ok | failed
    result        TEXT,
    error         TEXT
);
CREATE INDEX steps_by_run ON steps(run_id, seq);
";

/// What schema 2 added: a run's account-regions saved apart, each phase
/// writing only what it changed, each part a row of its own (the whole run
/// after every phase cost a 100,000-instance run seconds and hundreds of
/// MB; SQLite rewrites a whole row on update, so parts do not share one).
const V2_TABLES: &str = "
CREATE TABLE run_parts (
    run_id        TEXT NOT NULL REFERENCES runs(id),
    idx           INTEGER NOT NULL,       -- the account-region's place in the run
    part          TEXT NOT NULL,          -- scan | backups | starts | checks
    body          TEXT NOT NULL,          -- JSON: the account-region as scanned, or
                                          -- an array with one entry per scanned
                                          -- instance, in scan order. From schema 3
                                          -- a BLOB: that JSON, LZ4-compressed
                                          -- (size-prefixed block)
    PRIMARY KEY (run_id, idx, part)
);
";

/// What schema 4 changed: locks are per account and region, held by a
/// random owner token (schema 1 to 3 locked landing-zone names, held by pid
/// and hostname).
const V4_TABLES: &str = "
DROP TABLE IF EXISTS locks;
CREATE TABLE account_locks (
    account       TEXT NOT NULL,
    region        TEXT NOT NULL,
    landing_zone  TEXT NOT NULL,          -- the holder's name for it, for messages
    run_id        TEXT NOT NULL,
    owner         TEXT NOT NULL,          -- the holding process's random token
    pid           INTEGER NOT NULL,       -- to tell a dead holder on this host
    host          TEXT,                   -- where pid runs
    heartbeat     TEXT NOT NULL,
    PRIMARY KEY (account, region)
);
";

/// Why the journal cannot be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "no run journal at {path}: it is written by runs (pass --journal or --output-dir to point at another)"
    )]
    Missing { path: String },
    #[error("run journal {path} cannot be opened: {message}")]
    Open { path: String, message: String },
    #[error("run journal {path} is not a prepatch journal or is corrupt: {message}")]
    Corrupt { path: String, message: String },
    #[error(
        "run journal {path} is from a newer prepatch (schema version {found}; this one knows up to {SCHEMA_VERSION}): upgrade prepatch"
    )]
    Newer { path: String, found: i64 },
    #[error("run journal {path}: {message}")]
    Sql { path: String, message: String },
    #[error("run journal {path} has no run {run_id}: `prepatch runs` lists them")]
    UnknownRun { path: String, run_id: String },
    #[error(
        "account-region(s) {account_regions} are in use by run {run_id} (pid {pid}, alive, last heartbeat {heartbeat}): wait for it to finish, or stop it"
    )]
    Locked {
        account_regions: String,
        run_id: String,
        pid: i64,
        heartbeat: String,
    },
}

/// How a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Complete,
    Failed,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Complete => "complete",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "complete" => Status::Complete,
            "failed" => Status::Failed,
            "interrupted" => Status::Interrupted,
            _ => Status::Running,
        }
    }
}

/// What resume needs to run a run again as it was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunParams {
    pub config: PathBuf,
    pub landing_zones: Vec<String>,
    pub environment: Option<String>,
    pub regions: Vec<String>,
    pub profile: Option<String>,
    pub scanner_only: bool,
    pub phase: Option<String>,
    pub skip_backup: bool,
    pub skip_start: bool,
    pub skip_validation: bool,
    pub no_wait_backup: bool,
    pub output_dir: PathBuf,
    /// Inventory files or folders given with `--inventory`, absolute.
    #[serde(default)]
    pub inventory: Vec<PathBuf>,
    /// Each landing zone's environment when the run began, by name: the
    /// prod guard of a resume or a restore asks if this says `prod`, even
    /// if the config it is given now says otherwise.
    #[serde(default)]
    pub environments: BTreeMap<String, String>,
    /// How many days each landing zone's backups were to live when the
    /// run began (its environment's `retention_days`, else
    /// `ami_backup.retention_days`): cleanup never lets a backup go before
    /// its `CreationDate` plus this, whatever its `prepatch:expires-at` tag
    /// says. Empty in runs recorded before it was kept.
    #[serde(default)]
    pub retention: BTreeMap<String, u32>,
    /// The landing zones whose changes needed confirmation when the run
    /// began (`None` in runs recorded before it was kept: then `prod`
    /// in `environments` says so).
    #[serde(default)]
    pub confirm: Option<Vec<String>>,
    /// The landing zones the run took from AWS Organizations, as they were
    /// then: a resume, restore or rollback works on these, not on what the
    /// organization says now.
    #[serde(default)]
    pub discovered: Vec<crate::config::RecordedLandingZone>,
}

impl RunParams {
    /// The run's record says this landing zone's changes need
    /// confirmation: its own entry, or, for a run recorded before entries
    /// were kept, `prod` as its environment (or any prod in the run's
    /// environments, `run_environment`, as the runs table keeps it).
    pub fn recorded_confirm(&self, landing_zone: &str, run_environment: &str) -> bool {
        if let Some(confirm) = &self.confirm {
            return confirm.iter().any(|n| n == landing_zone);
        }
        match self.environments.get(landing_zone) {
            Some(e) => e == "prod",
            None => run_environment.split(',').any(|e| e.trim() == "prod"),
        }
    }

    /// Marks as needing confirmation every landing zone the record says
    /// needed it: a config that now says otherwise does not take it away.
    pub fn guard_recorded(&self, landing_zones: &mut [LandingZone], run_environment: &str) {
        for lz in landing_zones {
            if self.recorded_confirm(&lz.name, run_environment) {
                lz.confirm = true;
            }
        }
    }
}

/// One row of `prepatch runs`.
#[derive(Clone, Debug)]
pub struct RunRow {
    pub id: String,
    pub kind: String,
    pub of_run: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// As recorded; a `running` row whose process is gone reads `interrupted`.
    pub status: Status,
    pub landing_zones: String,
    pub environment: String,
    pub params: String,
    pub simulated: bool,
    pub dry_run: bool,
    pub attempts: i64,
    pub instances: i64,
    pub amis: i64,
    pub started: i64,
    pub failures: i64,
    pub summary: Option<String>,
}

/// One journaled step.
#[derive(Clone, Debug)]
pub struct Step {
    pub seq: i64,
    pub at: String,
    pub done_at: Option<String>,
    pub action: String,
    pub landing_zone: String,
    pub account: String,
    pub region: String,
    pub resources: Vec<String>,
    pub detail: Option<String>,
    pub status: String,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// Instances a run started, by (landing zone, account, region), and when
/// AWS answered each start.
#[derive(Clone, Debug, Default)]
pub struct Started {
    pub by_target: BTreeMap<(String, String, String), Vec<InstanceId>>,
    /// When the run's last start of each instance was answered (its
    /// outcome's time, this machine's clock).
    pub at: std::collections::HashMap<InstanceId, chrono::DateTime<Utc>>,
    /// EC2's `LaunchTime` as the run saw it once its start made the
    /// instance run (AWS's clock), from the run's saved state.
    pub launched: std::collections::HashMap<InstanceId, chrono::DateTime<Utc>>,
}

/// What restore holds an instance's `LaunchTime` against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartTime {
    /// EC2's own `LaunchTime` after the run's start: exact.
    Launched(chrono::DateTime<Utc>),
    /// Only the journal's time of the start's answer (this machine's
    /// clock): within a slack.
    Answered(chrono::DateTime<Utc>),
}

impl Started {
    pub fn time(&self, id: &InstanceId) -> Option<StartTime> {
        self.launched
            .get(id)
            .map(|t| StartTime::Launched(*t))
            .or_else(|| self.at.get(id).map(|t| StartTime::Answered(*t)))
    }

    /// Adds the `LaunchTime`s the run saw after its starts (its saved
    /// state; a run that stopped before its start phase ended has none).
    pub fn with_launch_times(mut self, run: &crate::model::Run) -> Started {
        for t in &run.targets {
            for r in &t.records {
                if let Some(at) = r.start.as_ref().and_then(|s| s.launched_at) {
                    self.launched.insert(r.instance.id.clone(), at);
                }
            }
        }
        self
    }
}

/// A new row in `runs`.
#[derive(Clone, Debug)]
pub struct NewRun<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub of_run: Option<&'a str>,
    pub landing_zones: &'a [String],
    pub environment: &'a str,
    pub params: &'a str,
    pub simulated: bool,
    pub dry_run: bool,
}

/// Counts for the `runs` list.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub instances: usize,
    pub amis: usize,
    pub started: usize,
    pub failures: usize,
}

/// An intent on record, or one that a relaxed journal writes with its
/// outcome.
#[derive(Debug)]
pub enum Intent {
    Written(i64),
    Deferred(Box<PendingStep>),
}

/// A step not written yet.
#[derive(Debug)]
pub struct PendingStep {
    run_id: String,
    at: String,
    action: String,
    target: Target,
    resources: String,
    detail: Option<String>,
}

/// The parts of an account-region that phases save (schema 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The account-region and its instances as scanned.
    Scan,
    /// Each instance's backup.
    Backups,
    /// Each instance's start.
    Starts,
    /// Each instance's SSM status and verdict.
    Checks,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Scan => "scan",
            Part::Backups => "backups",
            Part::Starts => "starts",
            Part::Checks => "checks",
        }
    }
}

/// One account-region of a saved run: JSON, as saved.
#[derive(Clone, Debug, Default)]
pub struct TargetParts {
    pub scan: String,
    pub backups: Option<String>,
    pub starts: Option<String>,
    pub checks: Option<String>,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The run journal.
pub struct Journal {
    path: PathBuf,
    conn: std::sync::Arc<Mutex<Connection>>,
    /// Simulated runs only: their steps are written by a thread of their
    /// own, in transactions of up to [`BATCH`] (`None`: each step is its
    /// own transaction, written before the call it is about).
    writer: Option<Writer>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens the journal, creating it (and its directory) when missing.
    /// A new file is the owner's alone ([`crate::files`]); SQLite gives
    /// its `-wal` and `-shm` files the database's mode.
    pub fn open_or_create(path: &Path) -> Result<Journal, JournalError> {
        let open_error = |e: std::io::Error| JournalError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_dir(dir).map_err(open_error)?;
        }
        if !path.is_dir() {
            crate::files::create_private(path).map_err(open_error)?;
        }
        Self::open_at(path)
    }

    /// Opens an existing journal; a missing file is an error.
    pub fn open_existing(path: &Path) -> Result<Journal, JournalError> {
        if !path.exists() {
            return Err(JournalError::Missing {
                path: path.display().to_string(),
            });
        }
        Self::open_at(path)
    }

    fn open_at(path: &Path) -> Result<Journal, JournalError> {
        let p = path.display().to_string();
        if path.is_dir() {
            return Err(JournalError::Open {
                path: p,
                message: "it is a directory".into(),
            });
        }
        if path.is_symlink() {
            return Err(JournalError::Open {
                path: p,
                message: "it is a symbolic link: pass the file it points at with --journal".into(),
            });
        }
        // No symlink followed, even one planted after the check above.
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| JournalError::Open {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let corrupt = |e: rusqlite::Error| JournalError::Corrupt {
            path: p.clone(),
            message: e.to_string(),
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(corrupt)?;
        // A journal is a file anyone with write access to its folder could
        // have swapped: its schema may not call functions with side
        // effects from views, triggers or defaults (SQLite, "PRAGMA
        // trusted_schema").
        conn.pragma_update(None, "trusted_schema", false)
            .map_err(corrupt)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(corrupt)?;
        if version > SCHEMA_VERSION {
            return Err(JournalError::Newer {
                path: p,
                found: version,
            });
        }
        // Anything but a journal: a database with other tables.
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(corrupt)?;
        if version == 0 && tables > 0 {
            return Err(JournalError::Corrupt {
                path: p,
                message: "it is an SQLite database with other tables".into(),
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(corrupt)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(corrupt)?;
        // Each older schema is brought up to this one in one transaction.
        // Schema 3 only compressed the bodies it writes; schema 2's text
        // bodies are still read as they are.
        let upgrade = match version {
            0 => Some(format!("{SCHEMA} {V2_TABLES} {V4_TABLES}")),
            1 => Some(format!("{V2_TABLES} {V4_TABLES}")),
            2 | 3 => Some(V4_TABLES.to_owned()),
            _ => None,
        };
        if let Some(sql) = upgrade {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {sql} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(corrupt)?;
        }
        // Journals of prepatch 0.1.0 before this index went: it cost every
        // step an insert, for a lookup now made once per attempt.
        conn.execute_batch("DROP INDEX IF EXISTS steps_by_resource")
            .map_err(corrupt)?;
        // A quick integrity check catches a damaged file now, not mid-run.
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(corrupt)?;
        if check != "ok" {
            return Err(JournalError::Corrupt {
                path: p,
                message: check,
            });
        }
        Ok(Journal {
            writer: None,
            path: path.to_owned(),
            conn: std::sync::Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For simulated runs (the demo): commits are not flushed to disk one
    /// by one, and steps are written by a thread of their own, up to a
    /// thousand a transaction, each intent with its outcome. Nothing real
    /// is at stake, and the simulation runs thousands of steps a second; a
    /// crash loses at most the steps not written yet. Anything else the
    /// journal is asked first waits for those.
    pub fn relaxed(mut self) -> Result<Journal, JournalError> {
        // NORMAL, not OFF: in WAL mode a power cut may lose the last
        // commits but cannot corrupt the file, which may also hold real
        // runs. SQLite folds the WAL into the file (a copy and a flush)
        // every 16 MB, on the thread that commits: the writer's, or the
        // checkpoint's, never the phases'. The run folds in the rest with
        // [`Journal::checkpoint`] while it writes its reports.
        self.with(|c| {
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.pragma_update(None, "wal_autocheckpoint", 4096)
        })?;
        self.writer = Some(
            Writer::start(std::sync::Arc::clone(&self.conn)).map_err(|e| JournalError::Open {
                path: self.path.display().to_string(),
                message: format!("cannot start its writer: {e}"),
            })?,
        );
        Ok(self)
    }

    fn sql(&self, e: rusqlite::Error) -> JournalError {
        self.failed(e.to_string())
    }

    fn failed(&self, message: impl Into<String>) -> JournalError {
        JournalError::Sql {
            path: self.path.display().to_string(),
            message: message.into(),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, JournalError> {
        // A simulated run's steps in the writer's queue come first.
        if let Some(w) = &self.writer {
            w.flush().map_err(|e| self.failed(e))?;
        }
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).map_err(|e| self.sql(e))
    }
}

/// The journal's tests stay together: they share fixtures, and most go
/// through several of the rooms above (a step written by `store`, read
/// back by `journaled`'s rules, under `lock`).
#[cfg(test)]
mod tests {
    use rusqlite::{OptionalExtension, params};

    use super::journaled::{start_result, started_in};
    use super::lock::hostname;
    use super::*;
    use crate::model::StateChange;

    fn target() -> Target {
        Target {
            landing_zone: "lz".into(),
            account: "111111111111".parse().expect("account"),
            region: "us-east-1".parse().expect("region"),
        }
    }

    fn new_run<'a>(id: &'a str, lzs: &'a [String]) -> NewRun<'a> {
        NewRun {
            id,
            kind: "run",
            of_run: None,
            landing_zones: lzs,
            environment: "nonprod",
            params: "{}",
            simulated: false,
            dry_run: false,
        }
    }

    #[test]
    fn intents_and_outcomes_make_the_timeline() {
        let dir = tempfile::tempdir().expect("tmp");
        let j = Journal::open_or_create(&dir.path().join("j.db")).expect("open");
        let lzs = vec!["lz".to_owned()];
        j.begin(&new_run("r1", &lzs)).expect("begin");
        let seq = j
            .intent("r1", "CreateImage", &target(), &["i-1".into()], None)
            .expect("intent");
        assert!(j.created_images("r1").unwrap().is_empty());
        j.outcome(seq, Ok(Some("ami-1"))).expect("outcome");
        assert_eq!(
            j.created_images("r1")
                .unwrap()
                .get("i-1")
                .map(String::as_str),
            Some("ami-1")
        );
        let s = j
            .intent(
                "r1",
                "StartInstances",
                &target(),
                &["i-1".into(), "i-2".into()],
                None,
            )
            .expect("intent");
        j.outcome(s, Ok(None)).expect("outcome");
        let failed = j
            .intent("r1", "StartInstances", &target(), &["i-3".into()], None)
            .expect("intent");
        j.outcome(failed, Err("InsufficientInstanceCapacity"))
            .expect("outcome");
        let started = j.started_instances("r1").expect("started");
        assert_eq!(
            started.by_target.values().next().expect("one target"),
            &[InstanceId::new("i-1"), InstanceId::new("i-2")]
        );
        assert_eq!(j.steps("r1").unwrap().len(), 3);
    }

    #[test]
    fn only_what_a_start_found_stopped_was_started_by_the_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let j = Journal::open_or_create(&dir.path().join("j.db")).expect("open");
        let lzs = vec!["lz".to_owned()];
        j.begin(&new_run("r1", &lzs)).expect("begin");
        let changes = [
            StateChange {
                id: InstanceId::new("i-1"),
                previous: crate::model::InstanceState::Stopped,
                current: crate::model::InstanceState::Pending,
            },
            // Someone else started it a moment before this call.
            StateChange {
                id: InstanceId::new("i-2"),
                previous: crate::model::InstanceState::Pending,
                current: crate::model::InstanceState::Pending,
            },
        ];
        let text = start_result(&changes);
        assert_eq!(
            text,
            "started: i-1; i-1 stopped->pending, i-2 pending->pending"
        );
        let s = j
            .intent(
                "r1",
                "StartInstances",
                &target(),
                &["i-1".into(), "i-2".into()],
                None,
            )
            .expect("intent");
        j.outcome(s, Ok(Some(&text))).expect("outcome");
        // A call whose every instance someone else had started.
        let none = start_result(&changes[1..]);
        let s = j
            .intent("r1", "StartInstances", &target(), &["i-2".into()], None)
            .expect("intent");
        j.outcome(s, Ok(Some(&none))).expect("outcome");
        let started = j.started_instances("r1").expect("started");
        assert_eq!(
            started.by_target.values().next().expect("one target"),
            &[InstanceId::new("i-1")]
        );
        assert_eq!(started_in(Some(&none)), Some(vec![]));
        assert_eq!(started_in(None), None, "an old step names no answer");
    }

    fn keys(names: &[(&str, &str, &str)]) -> Vec<LockKey> {
        names
            .iter()
            .map(|(account, region, lz)| LockKey {
                account: (*account).to_owned(),
                region: (*region).to_owned(),
                landing_zone: (*lz).to_owned(),
            })
            .collect()
    }

    const A: &str = "111111111111";
    const B: &str = "222222222222";

    #[test]
    fn a_second_live_run_on_the_same_account_region_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let j = Journal::open_or_create(&dir.path().join("j.db")).expect("open");
        j.lock("r1", &keys(&[(A, "eu-west-1", "a"), (B, "eu-west-1", "b")]))
            .expect("first lock");
        // Another live owner holds B: pid 1 (init) is always alive.
        j.with(|c| {
            c.execute(
                "UPDATE account_locks SET pid = 1, owner = 'other' WHERE account = ?1",
                [B],
            )
        })
        .unwrap();
        // The same account under another landing-zone name is the same lock.
        let err = j
            .lock(
                "r2",
                &keys(&[(B, "eu-west-1", "b-again"), (A, "us-east-1", "c")]),
            )
            .unwrap_err();
        assert!(err.to_string().contains("in use by run r1"), "{err}");
        assert!(
            err.to_string().contains("222222222222 eu-west-1 (b-again)"),
            "{err}"
        );
        // Nothing of r2 was taken; another region of B is free.
        let n: i64 = j
            .with(|c| {
                c.query_row(
                    "SELECT count(*) FROM account_locks WHERE run_id = 'r2'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(n, 0);
        j.lock("r2", &keys(&[(B, "us-east-1", "b")]))
            .expect("another region");
        // A dead pid's lock is stale and taken over.
        j.with(|c| c.execute("UPDATE account_locks SET pid = 999999999", []))
            .unwrap();
        j.lock("r2", &keys(&[(B, "eu-west-1", "b")]))
            .expect("stale lock taken over");
        // Another host's lock: live while its heartbeat is fresh.
        j.with(|c| {
            c.execute(
                "UPDATE account_locks SET pid = 999999999, host = 'elsewhere', owner = 'other', run_id = 'r3', heartbeat = ?1",
                [now()],
            )
        })
        .unwrap();
        let err = j.lock("r4", &keys(&[(B, "eu-west-1", "b")])).unwrap_err();
        assert!(err.to_string().contains("in use by run r3"), "{err}");
        let old = (Utc::now() - chrono::Duration::minutes(11)).to_rfc3339();
        j.with(|c| c.execute("UPDATE account_locks SET heartbeat = ?1", [old]))
            .unwrap();
        j.lock("r4", &keys(&[(B, "eu-west-1", "b")]))
            .expect("no heartbeat for 11 minutes: stale");
    }

    #[test]
    fn a_lock_is_mine_by_its_owner_token_not_by_pid_and_host() {
        // Two containers on one host: both pid 1, the same hostname. The
        // lock of the other is not mine, and it is live (its pid exists).
        let dir = tempfile::tempdir().expect("tmp");
        let j = Journal::open_or_create(&dir.path().join("j.db")).expect("open");
        let k = keys(&[(A, "eu-west-1", "a")]);
        j.lock("r1", &k).expect("lock");
        j.with(|c| {
            c.execute(
                "UPDATE account_locks SET owner = 'another-container', pid = ?1, host = ?2",
                params![i64::from(std::process::id()), hostname()],
            )
        })
        .unwrap();
        let err = j.lock("r2", &k).unwrap_err();
        assert!(err.to_string().contains("in use by run r1"), "{err}");
        // Nor does this process's unlock release it.
        j.unlock("r1").unwrap();
        assert!(j.lock("r2", &k).is_err(), "still held by its owner");
        assert_eq!(lock::owner_token().len(), 32);
    }

    #[tokio::test]
    async fn a_held_lock_beats_until_dropped_then_is_free() {
        let dir = tempfile::tempdir().expect("tmp");
        let j =
            std::sync::Arc::new(Journal::open_or_create(&dir.path().join("j.db")).expect("open"));
        let k = keys(&[(A, "eu-west-1", "a")]);
        let heartbeat = |j: &Journal| -> Option<String> {
            j.with(|c| {
                c.query_row("SELECT heartbeat FROM account_locks", [], |r| r.get(0))
                    .optional()
            })
            .unwrap()
        };
        let held = j
            .hold_lock("restore-1", &k, std::time::Duration::from_millis(20))
            .expect("lock");
        // Age the heartbeat past the stale-lock age, as hours of work would.
        let old = (Utc::now() - chrono::Duration::minutes(11)).to_rfc3339();
        j.with(|c| c.execute("UPDATE account_locks SET heartbeat = ?1", [&old]))
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let fresh = heartbeat(&j).expect("still locked");
        assert_ne!(fresh, old, "the heartbeat renewed it");
        // Another owner on another host would now see it live.
        j.with(|c| {
            c.execute(
                "UPDATE account_locks SET host = 'elsewhere', pid = 999999999, owner = 'other'",
                [],
            )
        })
        .unwrap();
        let err = j.lock("run-2", &k).unwrap_err();
        assert!(err.to_string().contains("in use by run restore-1"), "{err}");
        j.with(|c| c.execute("UPDATE account_locks SET owner = ?1", [lock::owner_token()]))
            .unwrap();
        drop(held);
        assert_eq!(heartbeat(&j), None, "released");
        j.lock("run-2", &k).expect("free again");
    }

    #[test]
    fn a_newer_schema_is_refused_with_the_file_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("j.db");
        drop(Journal::open_or_create(&path).expect("open"));
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = Journal::open_existing(&path).unwrap_err().to_string();
        assert!(
            err.contains("newer prepatch") && err.contains("j.db"),
            "{err}"
        );
    }

    #[test]
    fn a_schema_1_journal_is_upgraded_in_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("j.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "{SCHEMA} CREATE INDEX steps_by_resource ON steps(run_id, action, resources);
             PRAGMA user_version = 1;"
        ))
        .unwrap();
        c.execute(
            "INSERT INTO runs (id, kind, started_at, status, landing_zones, environment, params, snapshot)
             VALUES ('old', 'run', '2026-11-01T00:00:00Z', 'complete', 'lz', 'nonprod', '{}', '{}')",
            [],
        )
        .unwrap();
        drop(c);
        let j = Journal::open_existing(&path).expect("upgraded");
        assert_eq!(j.run("old").expect("kept").id, "old");
        j.save_parts("old", Part::Scan, [(0, "{}".to_owned())].into_iter())
            .expect("the new table");
        let c = Connection::open(&path).unwrap();
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let old_index: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'steps_by_resource'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_index, 0);
    }

    /// Schema 2 kept part bodies as text; schema 3 compresses what it
    /// writes and reads both.
    #[test]
    fn a_schema_2_journal_keeps_its_text_parts_beside_compressed_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("j.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!("{SCHEMA} {V2_TABLES} PRAGMA user_version = 2;"))
            .unwrap();
        c.execute_batch(
            "INSERT INTO runs (id, kind, started_at, status, landing_zones, environment, params)
             VALUES ('old', 'run', '2026-11-01T00:00:00Z', 'complete', 'lz', 'nonprod', '{}');
             INSERT INTO run_parts (run_id, idx, part, body) VALUES ('old', 0, 'scan', '{\"v\":2}');",
        )
        .unwrap();
        drop(c);
        let j = Journal::open_existing(&path).expect("upgraded");
        j.save_parts(
            "old",
            Part::Backups,
            [(0, "[\"v3\"]".to_owned())].into_iter(),
        )
        .expect("saved");
        let mut seen = Vec::new();
        j.for_each_target_part("old", |p| {
            seen.push((p.scan, p.backups));
            Ok(())
        })
        .expect("read")
        .expect("parts");
        assert_eq!(
            seen,
            [("{\"v\":2}".to_owned(), Some("[\"v3\"]".to_owned()))]
        );
        let c = Connection::open(&path).unwrap();
        let (version, kind): (i64, String) = c
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), typeof(body) FROM run_parts WHERE part = 'backups'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, kind.as_str()), (SCHEMA_VERSION, "blob"));
    }

    #[test]
    fn garbage_and_missing_files_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("j.db");
        std::fs::write(
            &path,
            b"this is not sqlite at all, just some text padding it out",
        )
        .unwrap();
        let err = Journal::open_existing(&path).unwrap_err().to_string();
        assert!(
            err.contains("not a prepatch journal") && err.contains("j.db"),
            "{err}"
        );
        let err = Journal::open_existing(&dir.path().join("none.db"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no run journal") && err.contains("none.db"),
            "{err}"
        );
    }
}
