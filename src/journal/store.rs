//! The journal's rows: a run beginning and finishing, each mutating call's
//! intent and outcome, the run's saved parts, and what later commands read
//! back (runs, steps, what a run made and started).

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use crate::cloud::Api;
use crate::model::{AmiId, InstanceId, Target, Witness, Witnesses};

use super::{
    Counts, Intent, Journal, JournalError, NewRun, Part, PendingStep, RunRow, Started, Status,
    Step, TargetParts, now,
};

use super::journaled::started_in;
use super::lock::lock_is_live;
use super::writer::Done;

impl Journal {
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
                if current.as_ref().is_some_and(|(i, _)| *i != idx)
                    && let Some((_, parts)) = current.take()
                    && let Err(e) = f(parts)
                {
                    return Ok(Err(e));
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
            if let Some((_, parts)) = current
                && let Err(e) = f(parts)
            {
                return Ok(Err(e));
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
                    c.prepare("SELECT pid, host, heartbeat FROM account_locks WHERE run_id = ?1")?;
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
            .by_target
            .into_values()
            .flatten()
            .map(|id| id.as_str().to_owned())
            .collect();
        let params: Option<String> = self.with(|c| {
            c.query_row("SELECT params FROM runs WHERE id = ?1", [run_id], |r| {
                r.get(0)
            })
            .optional()
        })?;
        let retention = params
            .and_then(|p| serde_json::from_str::<super::RunParams>(&p).ok())
            .map(|p| p.retention)
            .unwrap_or_default();
        Ok(Witnesses {
            known,
            retention,
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
        let mut out = Started::default();
        for s in self.steps(run_id)? {
            if s.action == Api::StartInstances.name() && s.status == "ok" {
                let at = s
                    .done_at
                    .as_deref()
                    .unwrap_or(s.at.as_str())
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .ok();
                let ids = out
                    .by_target
                    .entry((s.landing_zone.clone(), s.account.clone(), s.region.clone()))
                    .or_default();
                let named: Vec<String> = match started_in(s.result.as_deref()) {
                    Some(started) => started.into_iter().map(str::to_owned).collect(),
                    None => s.resources,
                };
                for r in named {
                    let id = InstanceId::new(r);
                    if let Some(at) = at {
                        out.at.insert(id.clone(), at);
                    }
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        out.by_target.retain(|_, ids| !ids.is_empty());
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
