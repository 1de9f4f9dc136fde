//! The run journal: one SQLite file (default `<output-dir>/prepatch.db`)
//! that records every run, restore and cleanup: its parameters, the
//! scanned fleet and what each phase changed (per account-region, see
//! [`crate::workflow::snapshot`]), and every
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
//! [`Journaled`] wraps a [`Cloud`]: every mutating call through it is
//! journaled, so the workflow's phases need no journal code of their own.
//! A lock per landing zone ([`Journal::lock`]) refuses a second run over
//! the same landing zones while one is alive.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::cloud::{
    Api, ApiCalls, Cloud, CloudError, ErrorKind, ImageFilter, ImageRequest, Probe, Scope,
};
use crate::config::LandingZone;
use crate::model::{
    AmiId, Image, Instance, InstanceId, Snapshot, SsmInfo, StateChange, StatusChecks, Tags, Target,
    Witness, Witnesses,
};

/// The schema this prepatch writes and understands.
pub const SCHEMA_VERSION: i64 = 3;

/// A lock whose process cannot be checked is stale after this long
/// without a heartbeat.
const STALE_AFTER: chrono::Duration = chrono::Duration::minutes(10);

/// How often a live run refreshes its lock.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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
CREATE TABLE locks (
    landing_zone  TEXT PRIMARY KEY,
    run_id        TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    host          TEXT,                   -- where pid runs
    heartbeat     TEXT NOT NULL
);
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
        "landing zone(s) {landing_zones} are in use by run {run_id} (pid {pid}, alive, last heartbeat {heartbeat}): wait for it to finish, or stop it"
    )]
    Locked {
        landing_zones: String,
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
    /// Each landing zone's environment when the run began, by name: the
    /// prod guard of a resume or a restore asks if this says `prod`, even
    /// if the config it is given now says otherwise.
    #[serde(default)]
    pub environments: BTreeMap<String, String>,
}

impl RunParams {
    /// The run's record calls this landing zone prod: its own entry, or,
    /// for a run recorded before entries were kept, any prod in the run's
    /// environments (`run_environment`, as the runs table keeps it).
    pub fn recorded_prod(&self, landing_zone: &str, run_environment: &str) -> bool {
        match self.environments.get(landing_zone) {
            Some(e) => e == "prod",
            None => run_environment.split(',').any(|e| e.trim() == "prod"),
        }
    }

    /// Marks as prod every landing zone the record calls prod.
    pub fn guard_recorded_prod(&self, landing_zones: &mut [LandingZone], run_environment: &str) {
        for lz in landing_zones {
            if self.recorded_prod(&lz.name, run_environment) {
                lz.environment = crate::model::Environment::Prod;
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

/// Instances a run started, by (landing zone, account, region).
pub type Started = BTreeMap<(String, String, String), Vec<InstanceId>>;

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

/// Steps per transaction in a simulated run's journal.
const BATCH: usize = 1000;

/// A relaxed journal's step writer: a simulated run makes thousands of
/// steps a second on one thread, which has better things to do than SQLite.
struct Writer {
    to: Option<std::sync::mpsc::Sender<ToWriter>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The first error it met, reported by the next step or read.
    failed: std::sync::Arc<Mutex<Option<String>>>,
}

enum ToWriter {
    Step(Box<PendingStep>, Done),
    /// Answered once everything sent before is committed.
    Flush(std::sync::mpsc::Sender<()>),
}

/// How a step ended.
struct Done {
    at: String,
    status: &'static str,
    result: Option<String>,
    error: Option<String>,
}

impl Writer {
    fn start(conn: std::sync::Arc<Mutex<Connection>>) -> std::io::Result<Writer> {
        let (to, from) = std::sync::mpsc::channel();
        let failed = std::sync::Arc::new(Mutex::new(None));
        let failures = std::sync::Arc::clone(&failed);
        let thread = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || write_steps(&conn, &from, &failures))?;
        Ok(Writer {
            to: Some(to),
            thread: Some(thread),
            failed,
        })
    }

    fn send(&self, m: ToWriter) -> bool {
        self.to.as_ref().is_some_and(|to| to.send(m).is_ok())
    }

    /// Queues a finished step; the first error met so far, if any.
    fn queue(&self, step: Box<PendingStep>, done: Done) -> Result<(), String> {
        if !self.send(ToWriter::Step(step, done)) {
            return Err("the journal's writer stopped".into());
        }
        self.error()
    }

    /// Waits until every step sent so far is committed; the first error.
    fn flush(&self) -> Result<(), String> {
        let (done, wait) = std::sync::mpsc::channel();
        if !self.send(ToWriter::Flush(done)) || wait.recv().is_err() {
            return Err("the journal's writer stopped".into());
        }
        self.error()
    }

    fn error(&self) -> Result<(), String> {
        match &*self.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the queue is written.
        drop(self.to.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer's loop: takes what is queued, up to [`BATCH`] steps, writes
/// them in one transaction, then answers the flushes among them.
fn write_steps(
    conn: &Mutex<Connection>,
    from: &std::sync::mpsc::Receiver<ToWriter>,
    failed: &Mutex<Option<String>>,
) {
    while let Ok(first) = from.recv() {
        let (mut steps, mut flushes) = (Vec::new(), Vec::new());
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                ToWriter::Step(step, done) => steps.push((step, done)),
                ToWriter::Flush(f) => flushes.push(f),
            }
            next = if steps.len() < BATCH {
                from.try_recv().ok()
            } else {
                None
            };
        }
        if !steps.is_empty() {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = insert_steps(&mut c, &steps) {
                tracing::error!(error = %e, "cannot write steps in the journal");
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e.to_string());
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// Writes finished steps, intent and outcome in one row each.
fn insert_steps(c: &mut Connection, steps: &[(Box<PendingStep>, Done)]) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO steps (run_id, at, done_at, action, landing_zone, account, region, resources, detail, status, result, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for (step, done) in steps {
            insert.execute(params![
                step.run_id,
                step.at,
                done.at,
                step.action,
                step.target.landing_zone,
                step.target.account.as_str(),
                step.target.region.as_str(),
                step.resources,
                step.detail,
                done.status,
                done.result,
                done.error
            ])?;
        }
    }
    tx.commit()
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens the journal, creating it (and its directory) when missing.
    pub fn open_or_create(path: &Path) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| JournalError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
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
        let conn = Connection::open(path).map_err(|e| JournalError::Open {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let corrupt = |e: rusqlite::Error| JournalError::Corrupt {
            path: p.clone(),
            message: e.to_string(),
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
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
        if version == 0 {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} {V2_TABLES} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(corrupt)?;
        } else if version == 1 {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {V2_TABLES} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(corrupt)?;
        } else if version == 2 {
            // Schema 3 only compresses the bodies it writes; schema 2's text
            // bodies are still read as they are.
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
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

    /// Records a run (or restore, cleanup) starting; a run id seen before
    /// (resume, `--run-id`) is a new attempt of the same row.
    pub fn begin(&self, run: &NewRun<'_>) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO runs (id, kind, of_run, started_at, status, landing_zones, environment, params, simulated, dry_run)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(id) DO UPDATE SET status = 'running', finished_at = NULL,
                    attempts = attempts + 1, params = excluded.params",
                params![
                    run.id,
                    run.kind,
                    run.of_run,
                    now(),
                    run.landing_zones.join(","),
                    run.environment,
                    run.params,
                    run.simulated,
                    run.dry_run
                ],
            )?;
            Ok(())
        })
    }

    /// Takes the lock on `landing_zones` for `run_id`, in one transaction:
    /// all or none. A lock held by a live process refuses; a stale one
    /// (its process gone, or no heartbeat for ten minutes) is taken over.
    pub fn lock(&self, run_id: &str, landing_zones: &[String]) -> Result<(), JournalError> {
        let pid = i64::from(std::process::id());
        let mut held: Option<(Vec<String>, String, i64, String)> = None;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for lz in landing_zones {
                let row: Option<(String, i64, Option<String>, String)> = tx
                    .query_row(
                        "SELECT run_id, pid, host, heartbeat FROM locks WHERE landing_zone = ?1",
                        [lz],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                if let Some((other, other_pid, host, heartbeat)) = row {
                    let mine = other_pid == pid && host.as_deref() == Some(hostname().as_str());
                    if !mine && lock_is_live(other_pid, host.as_deref(), &heartbeat) {
                        let h = held.get_or_insert((Vec::new(), other, other_pid, heartbeat));
                        h.0.push(lz.clone());
                        continue;
                    }
                    if !mine {
                        tracing::warn!(landing_zone = %lz, run = %other, pid = other_pid, "taking over a stale lock");
                    }
                }
            }
            if held.is_none() {
                for lz in landing_zones {
                    tx.execute(
                        "INSERT OR REPLACE INTO locks (landing_zone, run_id, pid, host, heartbeat) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![lz, run_id, pid, hostname(), now()],
                    )?;
                }
            }
            tx.commit()
        })?;
        match held {
            None => Ok(()),
            Some((lzs, run_id, pid, heartbeat)) => Err(JournalError::Locked {
                landing_zones: lzs.join(", "),
                run_id,
                pid,
                heartbeat,
            }),
        }
    }

    /// Refreshes this process's locks.
    pub fn heartbeat(&self, run_id: &str) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "UPDATE locks SET heartbeat = ?1 WHERE run_id = ?2 AND pid = ?3",
                params![now(), run_id, i64::from(std::process::id())],
            )?;
            Ok(())
        })
    }

    /// Takes the lock on `landing_zones` for `run_id` and keeps it alive:
    /// a heartbeat every `every` (production: [`HEARTBEAT_EVERY`]) for as
    /// long as the guard lives, so that a second run over the same landing
    /// zones is refused however long this one takes. Every command that
    /// changes anything holds one; dropping it releases the lock.
    pub fn hold_lock(
        self: &std::sync::Arc<Self>,
        run_id: &str,
        landing_zones: &[String],
        every: std::time::Duration,
    ) -> Result<HeldLock, JournalError> {
        self.lock(run_id, landing_zones)?;
        let (journal, id) = (std::sync::Arc::clone(self), run_id.to_owned());
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = journal.heartbeat(&id) {
                    tracing::warn!(error = %e, "journal heartbeat failed");
                }
            }
        });
        Ok(HeldLock {
            journal: std::sync::Arc::clone(self),
            run_id: run_id.to_owned(),
            heartbeat,
        })
    }

    /// Releases this process's locks for `run_id`.
    pub fn unlock(&self, run_id: &str) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM locks WHERE run_id = ?1 AND pid = ?2",
                params![run_id, i64::from(std::process::id())],
            )?;
            Ok(())
        })
    }

    /// Writes an intent before a mutating call. In a relaxed journal
    /// (simulated runs, whose steps are committed in batches anyway) the
    /// intent is written with its outcome, as one row.
    pub fn intent(
        &self,
        run_id: &str,
        action: &str,
        t: &Target,
        resources: &[String],
        detail: Option<&str>,
    ) -> Result<Intent, JournalError> {
        let step = PendingStep {
            run_id: run_id.to_owned(),
            at: now(),
            action: action.to_owned(),
            target: t.clone(),
            resources: resources.join(" "),
            detail: detail.map(str::to_owned),
        };
        if self.writer.is_some() {
            return Ok(Intent::Deferred(Box::new(step)));
        }
        self.with(|c| {
            // Cached: one of these per mutating call, so not parsed each time.
            c.prepare_cached(
                "INSERT INTO steps (run_id, at, action, landing_zone, account, region, resources, detail, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'intent')",
            )?
            .execute(params![
                step.run_id,
                step.at,
                step.action,
                step.target.landing_zone,
                step.target.account.as_str(),
                step.target.region.as_str(),
                step.resources,
                step.detail
            ])?;
            Ok(Intent::Written(c.last_insert_rowid()))
        })
    }

    /// Writes the outcome of an intent: a result (an AMI id...) or an error.
    pub fn outcome(
        &self,
        intent: Intent,
        result: Result<Option<&str>, &str>,
    ) -> Result<(), JournalError> {
        let (status, ok, err) = match result {
            Ok(r) => ("ok", r, None),
            Err(e) => ("failed", None, Some(e)),
        };
        let intent = match intent {
            Intent::Written(seq) => seq,
            Intent::Deferred(step) => {
                // Only a relaxed journal defers an intent, and it has a writer.
                let Some(w) = &self.writer else {
                    return Err(self.failed("a deferred step in a journal without a writer"));
                };
                let done = Done {
                    at: now(),
                    status,
                    result: ok.map(str::to_owned),
                    error: err.map(str::to_owned),
                };
                return w.queue(step, done).map_err(|e| self.failed(e));
            }
        };
        self.with(|c| {
            c.prepare_cached(
                "UPDATE steps SET done_at = ?1, status = ?2, result = ?3, error = ?4 WHERE seq = ?5",
            )?
            .execute(params![now(), status, ok, err, intent])?;
            Ok(())
        })
    }

    /// Records a line of the timeline that is not an AWS call (a phase done).
    pub fn note(&self, run_id: &str, action: &str, what: &str) -> Result<(), JournalError> {
        self.with(|c| {
            let at = now();
            c.execute(
                "INSERT INTO steps (run_id, at, done_at, action, landing_zone, account, region, resources, status)
                 VALUES (?1, ?2, ?2, ?3, '', '', '', ?4, 'ok')",
                params![run_id, at, action, what],
            )?;
            Ok(())
        })
    }

    /// Saves one part of each of a run's account-regions, by its place in
    /// the run, in one transaction. The scan starts them afresh (a resumed
    /// run scans again); the other parts are written by the phase that
    /// changed them.
    pub fn save_parts(
        &self,
        run_id: &str,
        part: Part,
        rows: impl Iterator<Item = (usize, String)>,
    ) -> Result<(), JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            if part == Part::Scan {
                tx.execute("DELETE FROM run_parts WHERE run_id = ?1", [run_id])?;
            }
            {
                let mut stmt = tx.prepare(
                    "INSERT OR REPLACE INTO run_parts (run_id, idx, part, body) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (idx, json) in rows {
                    let body = lz4_flex::compress_prepend_size(json.as_bytes());
                    stmt.execute(params![run_id, idx as i64, part.name(), body])?;
                }
            }
            tx.commit()
        })
    }

    /// A run's account-regions as saved, in order, one at a time.
    pub fn for_each_target_part(
        &self,
        run_id: &str,
        mut f: impl FnMut(TargetParts) -> Result<(), String>,
    ) -> Result<Result<(), String>, JournalError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT idx, part, body FROM run_parts WHERE run_id = ?1 ORDER BY idx, part",
            )?;
            let mut rows = stmt.query([run_id])?;
            let mut current: Option<(i64, TargetParts)> = None;
            while let Some(r) = rows.next()? {
                let (idx, part): (i64, String) = (r.get(0)?, r.get(1)?);
                let body = match part_body(r.get_ref(2)?) {
                    Ok(body) => body,
                    Err(e) => return Ok(Err(format!("account-region {idx}, {part}: {e}"))),
                };
                if current.as_ref().is_some_and(|(i, _)| *i != idx) {
                    if let Some((_, parts)) = current.take() {
                        if let Err(e) = f(parts) {
                            return Ok(Err(e));
                        }
                    }
                }
                let parts = &mut current
                    .get_or_insert_with(|| (idx, TargetParts::default()))
                    .1;
                match part.as_str() {
                    "scan" => parts.scan = body,
                    "backups" => parts.backups = Some(body),
                    "starts" => parts.starts = Some(body),
                    "checks" => parts.checks = Some(body),
                    other => return Ok(Err(format!("unknown part {other:?}"))),
                }
            }
            if let Some((_, parts)) = current {
                if let Err(e) = f(parts) {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(()))
        })
    }

    /// Saves the run as it stands (after a phase; its account-regions are
    /// saved apart, by [`Journal::save_parts`]) with its counts.
    pub fn save_snapshot(
        &self,
        run_id: &str,
        snapshot: &str,
        counts: Counts,
    ) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET snapshot = ?1, instances = ?2, amis = ?3, started = ?4, failures = ?5 WHERE id = ?6",
                params![
                    snapshot,
                    counts.instances as i64,
                    counts.amis as i64,
                    counts.started as i64,
                    counts.failures as i64,
                    run_id
                ],
            )?;
            Ok(())
        })
    }

    /// Saves the report metadata (tool, command line, config, API calls).
    pub fn save_meta(&self, run_id: &str, meta: &str) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET meta = ?1 WHERE id = ?2",
                params![meta, run_id],
            )?;
            Ok(())
        })
    }

    /// Marks a run finished.
    pub fn finish(
        &self,
        run_id: &str,
        status: Status,
        summary: Option<&str>,
    ) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = ?1, finished_at = ?2, summary = COALESCE(?3, summary) WHERE id = ?4",
                params![status.as_str(), now(), summary, run_id],
            )?;
            Ok(())
        })
    }

    /// Folds the write-ahead log into the database file and empties it, so
    /// that closing the journal has nothing left to do. A run calls it
    /// beside its reports (closing would do it on the run's own thread).
    pub fn checkpoint(&self) -> Result<(), JournalError> {
        self.with(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
    }

    /// Every run, newest first.
    pub fn runs(&self) -> Result<Vec<RunRow>, JournalError> {
        let rows = self.with(|c| {
            let mut stmt =
                c.prepare(&format!("{RUN_COLUMNS} ORDER BY started_at DESC, id DESC"))?;
            let rows = stmt
                .query_map([], run_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        rows.into_iter().map(|r| self.live_status(r)).collect()
    }

    /// One run.
    pub fn run(&self, id: &str) -> Result<RunRow, JournalError> {
        let row = self.with(|c| {
            c.query_row(&format!("{RUN_COLUMNS} WHERE id = ?1"), [id], run_row)
                .optional()
        })?;
        match row {
            Some(r) => self.live_status(r),
            None => Err(JournalError::UnknownRun {
                path: self.path.display().to_string(),
                run_id: id.to_owned(),
            }),
        }
    }

    /// A `running` row whose lock is gone or stale was killed: interrupted.
    fn live_status(&self, mut r: RunRow) -> Result<RunRow, JournalError> {
        if r.status == Status::Running {
            let locks: Vec<(i64, Option<String>, String)> = self.with(|c| {
                let mut stmt =
                    c.prepare("SELECT pid, host, heartbeat FROM locks WHERE run_id = ?1")?;
                let rows = stmt
                    .query_map([&r.id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })?;
            if !locks
                .iter()
                .any(|(pid, host, hb)| lock_is_live(*pid, host.as_deref(), hb))
            {
                r.status = Status::Interrupted;
            }
        }
        Ok(r)
    }

    /// The newest run (not a restore or cleanup) that did not finish.
    pub fn latest_interrupted(&self) -> Result<Option<RunRow>, JournalError> {
        Ok(self
            .runs()?
            .into_iter()
            .find(|r| r.kind == "run" && r.status == Status::Interrupted && !r.dry_run))
    }

    /// The run's snapshot and report metadata, as saved.
    pub fn snapshot(&self, id: &str) -> Result<(Option<String>, Option<String>), JournalError> {
        self.run(id)?;
        self.with(|c| {
            c.query_row("SELECT snapshot, meta FROM runs WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
    }

    /// A run's timeline, in order.
    pub fn steps(&self, run_id: &str) -> Result<Vec<Step>, JournalError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, at, done_at, action, landing_zone, account, region, resources, detail, status, result, error
                 FROM steps WHERE run_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([run_id], |r| {
                    let resources: String = r.get(7)?;
                    Ok(Step {
                        seq: r.get(0)?,
                        at: r.get(1)?,
                        done_at: r.get(2)?,
                        action: r.get(3)?,
                        landing_zone: r.get(4)?,
                        account: r.get(5)?,
                        region: r.get(6)?,
                        resources: resources.split_whitespace().map(str::to_owned).collect(),
                        detail: r.get(8)?,
                        status: r.get(9)?,
                        result: r.get(10)?,
                        error: r.get(11)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// The AMIs this run's successful `CreateImage` calls made, by
    /// instance id (the last one, if an instance has several).
    pub fn created_images(&self, run_id: &str) -> Result<HashMap<String, String>, JournalError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT resources, result FROM steps WHERE run_id = ?1 AND action = 'CreateImage'
                 AND status = 'ok' AND result IS NOT NULL ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![run_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// What this journal says of a run's `CreateImage` calls, by instance
    /// (the witness for [`Image::backup_of`](crate::model::Image::backup_of)),
    /// and of the instances it started.
    pub fn backup_witnesses(&self, run_id: &str) -> Result<Witnesses, JournalError> {
        let mut by_instance: HashMap<String, Witness> = HashMap::new();
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT resources, status, result FROM steps WHERE run_id = ?1 AND action = 'CreateImage' ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![run_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?;
            for row in rows {
                let (instance, status, result) = row?;
                let w = by_instance.entry(instance).or_insert(Witness::Attempted);
                if let (true, Some(ami)) = (status == "ok", result) {
                    *w = Witness::Made(AmiId::new(ami));
                }
            }
            Ok(())
        })?;
        // The journal speaks for the run's backups once it has any of them:
        // then an AMI of an instance it never asked for is not the run's.
        let known = !by_instance.is_empty();
        let started = self
            .started_instances(run_id)?
            .into_values()
            .flatten()
            .map(|id| id.as_str().to_owned())
            .collect();
        Ok(Witnesses {
            known,
            by_instance,
            started,
        })
    }

    /// Instances this run started, by (landing zone, account, region): those
    /// that a successful `StartInstances` of the run found `stopped`, by
    /// AWS's answer. An instance someone else started a moment before is
    /// not among them. A step from before answers were journaled counts
    /// every instance it named (restore's tag check still applies).
    pub fn started_instances(&self, run_id: &str) -> Result<Started, JournalError> {
        let mut out = Started::new();
        for s in self.steps(run_id)? {
            if s.action == Api::StartInstances.name() && s.status == "ok" {
                let ids = out
                    .entry((s.landing_zone.clone(), s.account.clone(), s.region.clone()))
                    .or_default();
                let named: Vec<String> = match started_in(s.result.as_deref()) {
                    Some(started) => started.into_iter().map(str::to_owned).collect(),
                    None => s.resources,
                };
                for r in named {
                    let id = InstanceId::new(r);
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        out.retain(|_, ids| !ids.is_empty());
        Ok(out)
    }
}

const RUN_COLUMNS: &str =
    "SELECT id, kind, of_run, started_at, finished_at, status, landing_zones, environment, params,
    simulated, dry_run, attempts, instances, amis, started, failures, summary FROM runs";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let status: String = r.get(5)?;
    Ok(RunRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        of_run: r.get(2)?,
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        status: Status::parse(&status),
        landing_zones: r.get(6)?,
        environment: r.get(7)?,
        params: r.get(8)?,
        simulated: r.get(9)?,
        dry_run: r.get(10)?,
        attempts: r.get(11)?,
        instances: r.get(12)?,
        amis: r.get(13)?,
        started: r.get(14)?,
        failures: r.get(15)?,
        summary: r.get(16)?,
    })
}

/// Whether a lock's holder is alive: its heartbeat is at most ten minutes
/// old and, when it runs on this host (and `/proc` can tell), its process
/// exists. So a lock left by a killed run is taken over at once on the same
/// host, and after ten minutes from any other (a shared journal).
fn lock_is_live(pid: i64, host: Option<&str>, heartbeat: &str) -> bool {
    let fresh = heartbeat
        .parse::<DateTime<Utc>>()
        .is_ok_and(|h| Utc::now() - h < STALE_AFTER);
    let proc = Path::new("/proc");
    if host == Some(hostname().as_str()) && proc.join("self").exists() {
        return fresh && proc.join(pid.to_string()).exists();
    }
    fresh
}

/// This machine's name, for locks (Linux; elsewhere `localhost`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// A lock on landing zones, kept alive by a heartbeat until dropped
/// ([`Journal::hold_lock`]).
pub struct HeldLock {
    journal: std::sync::Arc<Journal>,
    run_id: String,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Err(e) = self.journal.unlock(&self.run_id) {
            tracing::error!(error = %e, run = %self.run_id, "cannot release the lock");
        }
    }
}

/// A [`Cloud`] whose mutating calls are journaled: the intent before the
/// call, the outcome after. A `CreateImage` that the journal says an earlier
/// attempt of this run made, and whose AMI still exists (looked up by its
/// name), is not sent again: its AMI is returned.
pub struct Journaled<'a> {
    inner: &'a dyn Cloud,
    journal: &'a Journal,
    run_id: String,
    /// The AMIs earlier attempts of this run made, by instance: read once,
    /// at the first `CreateImage`, not once per instance.
    earlier: std::sync::OnceLock<HashMap<String, String>>,
}

impl<'a> Journaled<'a> {
    pub fn new(inner: &'a dyn Cloud, journal: &'a Journal, run_id: impl Into<String>) -> Self {
        Journaled {
            inner,
            journal,
            run_id: run_id.into(),
            earlier: std::sync::OnceLock::new(),
        }
    }

    /// The AMI an earlier attempt of this run made for `instance`.
    fn earlier_image(&self, instance: &InstanceId) -> Result<Option<String>, JournalError> {
        if self.earlier.get().is_none() {
            let made = self.journal.created_images(&self.run_id)?;
            let _ = self.earlier.set(made);
        }
        Ok(self
            .earlier
            .get()
            .and_then(|m| m.get(instance.as_str()).cloned()))
    }

    fn intent(
        &self,
        api: Api,
        t: &Target,
        resources: &[String],
        detail: Option<&str>,
    ) -> Result<Intent, CloudError> {
        self.journal
            .intent(&self.run_id, api.name(), t, resources, detail)
            .map_err(|e| journal_error(api, &e))
    }

    /// A mutating call, journaled: the intent, the call, its outcome.
    async fn journaled<T>(
        &self,
        api: Api,
        t: &Target,
        resources: &[String],
        detail: Option<&str>,
        call: impl std::future::Future<Output = Result<T, CloudError>>,
    ) -> Result<T, CloudError> {
        let seq = self.intent(api, t, resources, detail)?;
        let result = call.await;
        self.outcome(seq, &result, None);
        result
    }

    fn outcome<T>(&self, seq: Intent, result: &Result<T, CloudError>, value: Option<&str>) {
        let r = match result {
            Ok(_) => Ok(value),
            Err(e) => Err(e.to_string()),
        };
        let r = match &r {
            Ok(v) => Ok(*v),
            Err(e) => Err(e.as_str()),
        };
        if let Err(e) = self.journal.outcome(seq, r) {
            tracing::error!(error = %e, "cannot journal an outcome; resume will find it by tag");
        }
    }
}

/// A journal that cannot take an intent stops the call: nothing is changed
/// off the record.
fn journal_error(api: Api, e: &JournalError) -> CloudError {
    CloudError::new(api, ErrorKind::Api, "JournalWriteFailed", e.to_string())
}

/// What a `StartInstances` answer says, as journaled: the instances this
/// call started (`stopped` before it), then every instance's change.
/// `started: i-a i-b; i-a stopped->pending, i-b stopped->pending, i-c
/// running->running`. Only the ids before the `;` were started by the run.
fn start_result(changes: &[StateChange]) -> String {
    let started: Vec<&str> = changes
        .iter()
        .filter(|c| c.previous == crate::model::InstanceState::Stopped)
        .map(|c| c.id.as_str())
        .collect();
    format!("started: {}; {}", started.join(" "), changes_text(changes))
}

/// `i-a stopped->pending, i-b running->running`.
fn changes_text(changes: &[StateChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{} {}->{}", c.id, c.previous, c.current))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The instances a journaled `StartInstances` started: those its answer
/// names as `stopped` before the call. `None` for a step journaled before
/// answers were recorded (no `started:` result).
fn started_in(result: Option<&str>) -> Option<Vec<&str>> {
    let list = result?.strip_prefix("started:")?;
    let list = list.split(';').next().unwrap_or_default();
    Some(list.split_whitespace().collect())
}

fn tags_detail(tags: &Tags) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait]
impl Cloud for Journaled<'_> {
    async fn assume_role(
        &self,
        lz: &LandingZone,
        session_name: &str,
    ) -> Result<String, CloudError> {
        self.inner.assume_role(lz, session_name).await
    }

    async fn describe_instances(
        &self,
        t: &Target,
        scope: Scope,
    ) -> Result<Vec<Instance>, CloudError> {
        self.inner.describe_instances(t, scope).await
    }

    async fn ssm_info(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
    ) -> Result<BTreeMap<InstanceId, SsmInfo>, CloudError> {
        self.inner.ssm_info(t, only).await
    }

    async fn create_image(&self, t: &Target, req: &ImageRequest) -> Result<AmiId, CloudError> {
        let known = self
            .earlier_image(&req.instance)
            .map_err(|e| journal_error(Api::CreateImage, &e))?;
        if let Some(ami) = known {
            // The journal says it was made (its tag lookup missed it): check
            // that it still exists, by its name, before not making it again.
            let found = self
                .inner
                .describe_images(t, &ImageFilter::Name(req.name.clone()))
                .await?;
            if found.iter().any(|i| i.id.as_str() == ami) {
                tracing::info!(instance = %req.instance, %ami, "the journal has this run's AMI: not created again");
                return Ok(AmiId::new(ami));
            }
            tracing::warn!(instance = %req.instance, %ami, "the journal's AMI is gone: creating it again");
        }
        let seq = self.intent(
            Api::CreateImage,
            t,
            &[req.instance.as_str().to_owned()],
            Some(&req.name),
        )?;
        let result = self.inner.create_image(t, req).await;
        let ami = result.as_ref().ok().map(|a| a.as_str().to_owned());
        self.outcome(seq, &result, ami.as_deref());
        result
    }

    async fn describe_images(
        &self,
        t: &Target,
        filter: &ImageFilter,
    ) -> Result<Vec<Image>, CloudError> {
        self.inner.describe_images(t, filter).await
    }

    async fn create_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.journaled(
            Api::CreateTags,
            t,
            resources,
            Some(&tags_detail(tags)),
            self.inner.create_tags(t, resources, tags),
        )
        .await
    }

    async fn start_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        let list: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        let seq = self.intent(Api::StartInstances, t, &list, None)?;
        let result = self.inner.start_instances(t, ids).await;
        let started = result.as_ref().ok().map(|changes| start_result(changes));
        self.outcome(seq, &result, started.as_deref());
        result
    }

    async fn instance_status(&self, t: &Target) -> Result<Vec<StatusChecks>, CloudError> {
        self.inner.instance_status(t).await
    }

    async fn permitted(&self, t: &Target, probe: &Probe) -> Result<(), CloudError> {
        self.inner.permitted(t, probe).await
    }

    async fn stop_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        let list: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        let seq = self.intent(Api::StopInstances, t, &list, None)?;
        let result = self.inner.stop_instances(t, ids).await;
        let answer = result.as_ref().ok().map(|changes| changes_text(changes));
        self.outcome(seq, &result, answer.as_deref());
        result
    }

    async fn deregister_image(&self, t: &Target, ami: &AmiId) -> Result<(), CloudError> {
        self.journaled(
            Api::DeregisterImage,
            t,
            &[ami.as_str().to_owned()],
            None,
            self.inner.deregister_image(t, ami),
        )
        .await
    }

    async fn describe_snapshots(
        &self,
        t: &Target,
        key: &str,
        value: &str,
    ) -> Result<Vec<Snapshot>, CloudError> {
        self.inner.describe_snapshots(t, key, value).await
    }

    async fn delete_snapshot(&self, t: &Target, snapshot: &str) -> Result<(), CloudError> {
        self.journaled(
            Api::DeleteSnapshot,
            t,
            &[snapshot.to_owned()],
            None,
            self.inner.delete_snapshot(t, snapshot),
        )
        .await
    }

    async fn delete_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.journaled(
            Api::DeleteTags,
            t,
            resources,
            Some(&tags_detail(tags)),
            self.inner.delete_tags(t, resources, tags),
        )
        .await
    }

    async fn enable_image_deprecation(
        &self,
        t: &Target,
        ami: &AmiId,
        at: DateTime<Utc>,
    ) -> Result<(), CloudError> {
        let when = at.to_rfc3339_opts(SecondsFormat::Secs, true);
        self.journaled(
            Api::EnableImageDeprecation,
            t,
            &[ami.as_str().to_owned()],
            Some(&when),
            self.inner.enable_image_deprecation(t, ami, at),
        )
        .await
    }

    fn api_calls(&self) -> &ApiCalls {
        self.inner.api_calls()
    }

    fn is_simulated(&self) -> bool {
        self.inner.is_simulated()
    }
}

/// A part's JSON: schema 3 keeps it LZ4-compressed (a 100,000-instance
/// run's parts are 87 MB of JSON, 14 MB compressed, and the journal's log
/// is written and folded in again), schema 2 as text.
fn part_body(body: rusqlite::types::ValueRef<'_>) -> Result<String, String> {
    use rusqlite::types::ValueRef;
    match body {
        ValueRef::Text(t) => String::from_utf8(t.to_vec()).map_err(|e| e.to_string()),
        ValueRef::Blob(b) => lz4_flex::decompress_size_prepended(b)
            .map_err(|e| e.to_string())
            .and_then(|json| String::from_utf8(json).map_err(|e| e.to_string())),
        _ => Err("not JSON".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            started.values().next().expect("one target"),
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
            started.values().next().expect("one target"),
            &[InstanceId::new("i-1")]
        );
        assert_eq!(started_in(Some(&none)), Some(vec![]));
        assert_eq!(started_in(None), None, "an old step names no answer");
    }

    #[test]
    fn a_second_live_run_on_the_same_landing_zone_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let j = Journal::open_or_create(&dir.path().join("j.db")).expect("open");
        let lzs = vec!["a".to_owned(), "b".to_owned()];
        j.lock("r1", &lzs).expect("first lock");
        // Another live process holds "b": pid 1 (init) is always alive.
        j.with(|c| c.execute("UPDATE locks SET pid = 1 WHERE landing_zone = 'b'", []))
            .unwrap();
        let err = j.lock("r2", &["b".to_owned(), "c".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("in use by run r1"), "{err}");
        // Nothing of r2 was taken.
        let n: i64 = j
            .with(|c| {
                c.query_row("SELECT count(*) FROM locks WHERE run_id = 'r2'", [], |r| {
                    r.get(0)
                })
            })
            .unwrap();
        assert_eq!(n, 0);
        // A dead pid's lock is stale and taken over.
        j.with(|c| c.execute("UPDATE locks SET pid = 999999999", []))
            .unwrap();
        j.lock("r2", &["b".to_owned()])
            .expect("stale lock taken over");
        // Another host's lock: live while its heartbeat is fresh.
        j.with(|c| {
            c.execute(
                "UPDATE locks SET pid = 999999999, host = 'elsewhere', run_id = 'r3', heartbeat = ?1",
                [now()],
            )
        })
        .unwrap();
        let err = j.lock("r4", &["b".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("in use by run r3"), "{err}");
        let old = (Utc::now() - chrono::Duration::minutes(11)).to_rfc3339();
        j.with(|c| c.execute("UPDATE locks SET heartbeat = ?1", [old]))
            .unwrap();
        j.lock("r4", &["b".to_owned()])
            .expect("no heartbeat for 11 minutes: stale");
    }

    #[tokio::test]
    async fn a_held_lock_beats_until_dropped_then_is_free() {
        let dir = tempfile::tempdir().expect("tmp");
        let j =
            std::sync::Arc::new(Journal::open_or_create(&dir.path().join("j.db")).expect("open"));
        let lzs = vec!["a".to_owned()];
        let heartbeat = |j: &Journal| -> Option<String> {
            j.with(|c| {
                c.query_row(
                    "SELECT heartbeat FROM locks WHERE landing_zone = 'a'",
                    [],
                    |r| r.get(0),
                )
                .optional()
            })
            .unwrap()
        };
        let held = j
            .hold_lock("restore-1", &lzs, std::time::Duration::from_millis(20))
            .expect("lock");
        // Age the heartbeat past the stale-lock age, as hours of work would.
        let old = (Utc::now() - chrono::Duration::minutes(11)).to_rfc3339();
        j.with(|c| c.execute("UPDATE locks SET heartbeat = ?1", [&old]))
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let fresh = heartbeat(&j).expect("still locked");
        assert_ne!(fresh, old, "the heartbeat renewed it");
        // Another host would now see it live.
        j.with(|c| c.execute("UPDATE locks SET host = 'elsewhere', pid = 999999999", []))
            .unwrap();
        let err = j.lock("run-2", &lzs).unwrap_err();
        assert!(err.to_string().contains("in use by run restore-1"), "{err}");
        j.with(|c| {
            c.execute(
                "UPDATE locks SET host = ?1, pid = ?2",
                params![hostname(), i64::from(std::process::id())],
            )
        })
        .unwrap();
        drop(held);
        assert_eq!(heartbeat(&j), None, "released");
        j.lock("run-2", &lzs).expect("free again");
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
