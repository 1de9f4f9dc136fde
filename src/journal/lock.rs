//! The lock per account and region that keeps two runs (or a run and a
//! restore, rollback or cleanup) off the same servers, and the heartbeat
//! that keeps it alive for as long as its holder works.
//!
//! A lock is keyed by what AWS knows (the account id and the region), not
//! by the landing zone's name: two names for one account are one set of
//! servers. It is held by a random owner token made once per process, not
//! by pid and hostname: two containers on one host can both be pid 1 with
//! the same hostname. The pid and hostname stay on record to tell a dead
//! holder on this host at once.

use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Journal, JournalError, now};
use crate::config::LandingZone;

/// A lock whose process cannot be checked is stale after this long
/// without a heartbeat.
const STALE_AFTER: chrono::Duration = chrono::Duration::minutes(10);

/// How often a live run refreshes its lock.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// One account-region a command works in: what it locks. The landing
/// zone's name is kept for messages only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockKey {
    pub account: String,
    pub region: String,
    pub landing_zone: String,
}

impl LockKey {
    /// Every account-region of `landing_zones`, once each.
    pub fn of(landing_zones: &[LandingZone]) -> Vec<LockKey> {
        let mut keys: Vec<LockKey> = Vec::new();
        for lz in landing_zones {
            for region in &lz.regions {
                let key = LockKey {
                    account: lz.account_id.to_string(),
                    region: region.to_string(),
                    landing_zone: lz.name.clone(),
                };
                if !keys
                    .iter()
                    .any(|k| k.account == key.account && k.region == key.region)
                {
                    keys.push(key);
                }
            }
        }
        keys
    }
}

/// This process's owner token: 128 random bits, made once.
pub(super) fn owner_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // No randomness from the OS is a broken machine; the pid and the
        // clock still tell this process from most others.
        if getrandom::fill(&mut bytes).is_err() {
            let seed = u128::from(std::process::id())
                ^ Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128;
            bytes = seed.to_le_bytes();
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// A lock found held by another live owner.
struct Held {
    keys: Vec<String>,
    run_id: String,
    pid: i64,
    heartbeat: String,
}

impl Journal {
    /// Takes the lock on `keys` for `run_id`, in one transaction: all or
    /// none. A lock held by another live owner refuses; a stale one (its
    /// process gone, or no heartbeat for ten minutes) is taken over.
    pub fn lock(&self, run_id: &str, keys: &[LockKey]) -> Result<(), JournalError> {
        let pid = i64::from(std::process::id());
        let me = owner_token();
        let mut held: Option<Held> = None;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for key in keys {
                let row: Option<(String, String, i64, Option<String>, String)> = tx
                    .query_row(
                        "SELECT run_id, owner, pid, host, heartbeat FROM account_locks
                         WHERE account = ?1 AND region = ?2",
                        [&key.account, &key.region],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                let Some((other, owner, other_pid, host, heartbeat)) = row else {
                    continue;
                };
                if owner == me {
                    continue;
                }
                if lock_is_live(other_pid, host.as_deref(), &heartbeat) {
                    let h = held.get_or_insert_with(|| Held {
                        keys: Vec::new(),
                        run_id: other,
                        pid: other_pid,
                        heartbeat,
                    });
                    h.keys.push(format!(
                        "{} {} ({})",
                        key.account, key.region, key.landing_zone
                    ));
                    continue;
                }
                tracing::warn!(
                    account = %key.account,
                    region = %key.region,
                    run = %other,
                    pid = other_pid,
                    "taking over a stale lock"
                );
            }
            if held.is_none() {
                for key in keys {
                    tx.execute(
                        "INSERT OR REPLACE INTO account_locks
                         (account, region, landing_zone, run_id, owner, pid, host, heartbeat)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            key.account,
                            key.region,
                            key.landing_zone,
                            run_id,
                            me,
                            pid,
                            hostname(),
                            now()
                        ],
                    )?;
                }
            }
            tx.commit()
        })?;
        match held {
            None => Ok(()),
            Some(h) => Err(JournalError::Locked {
                account_regions: h.keys.join(", "),
                run_id: h.run_id,
                pid: h.pid,
                heartbeat: h.heartbeat,
            }),
        }
    }

    /// Refreshes this process's locks for `run_id`.
    pub fn heartbeat(&self, run_id: &str) -> Result<(), JournalError> {
        self.with(|c| {
            c.execute(
                "UPDATE account_locks SET heartbeat = ?1 WHERE run_id = ?2 AND owner = ?3",
                params![now(), run_id, owner_token()],
            )?;
            Ok(())
        })
    }

    /// Takes the lock on `keys` for `run_id` and keeps it alive: a
    /// heartbeat every `every` (production: [`HEARTBEAT_EVERY`]) for as
    /// long as the guard lives, so that a second run over the same
    /// account-regions is refused however long this one takes. Every
    /// command that changes anything holds one; dropping it releases it.
    pub fn hold_lock(
        self: &std::sync::Arc<Self>,
        run_id: &str,
        keys: &[LockKey],
        every: std::time::Duration,
    ) -> Result<HeldLock, JournalError> {
        self.lock(run_id, keys)?;
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
                "DELETE FROM account_locks WHERE run_id = ?1 AND owner = ?2",
                params![run_id, owner_token()],
            )?;
            Ok(())
        })
    }
}

/// Whether a lock's holder is alive: its heartbeat is at most ten minutes
/// old and, when it runs on this host (and `/proc` can tell), its process
/// exists. So a lock left by a killed run is taken over at once on the same
/// host, and after ten minutes from any other (a shared journal). A pid
/// that exists on this host may be another container's: the lock is then
/// live, which refuses rather than takes over.
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

/// A lock on account-regions, kept alive by a heartbeat until dropped
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
