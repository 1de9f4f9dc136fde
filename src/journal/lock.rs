//! The lock per landing zone that keeps two runs (or a run and a restore
//! or cleanup) off the same landing zones, and the heartbeat that keeps it
//! alive for as long as its holder works.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Journal, JournalError, now};

/// A lock whose process cannot be checked is stale after this long
/// without a heartbeat.
const STALE_AFTER: chrono::Duration = chrono::Duration::minutes(10);

/// How often a live run refreshes its lock.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Journal {
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
}

/// Whether a lock's holder is alive: its heartbeat is at most ten minutes
/// old and, when it runs on this host (and `/proc` can tell), its process
/// exists. So a lock left by a killed run is taken over at once on the same
/// host, and after ten minutes from any other (a shared journal).
pub(super) fn lock_is_live(pid: i64, host: Option<&str>, heartbeat: &str) -> bool {
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
pub(super) fn hostname() -> String {
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
