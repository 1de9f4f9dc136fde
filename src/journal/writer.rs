//! A relaxed journal's writer thread: a simulated run's steps committed in
//! batches, off the thread that makes them.

use std::sync::Mutex;

use rusqlite::{Connection, params};

use super::PendingStep;

/// Steps per transaction in a simulated run's journal.
const BATCH: usize = 1000;

/// A relaxed journal's step writer: a simulated run makes thousands of
/// steps a second on one thread, which has better things to do than SQLite.
pub(super) struct Writer {
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
pub(super) struct Done {
    pub(super) at: String,
    pub(super) status: &'static str,
    pub(super) result: Option<String>,
    pub(super) error: Option<String>,
}

impl Writer {
    pub(super) fn start(conn: std::sync::Arc<Mutex<Connection>>) -> std::io::Result<Writer> {
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
    pub(super) fn queue(&self, step: Box<PendingStep>, done: Done) -> Result<(), String> {
        if !self.send(ToWriter::Step(step, done)) {
            return Err("the journal's writer stopped".into());
        }
        self.error()
    }

    /// Waits until every step sent so far is committed; the first error.
    pub(super) fn flush(&self) -> Result<(), String> {
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
