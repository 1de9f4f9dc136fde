//! A workflow executed: journaled, checkpointed as each account-region
//! gets through each phase, its reports written and its summary printed.
//! Shared by the run and the demo.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use std::sync::Arc;

use super::{BUILT_IN_CONFIG, Operation, confirm, environments_of};
use crate::cli::SummaryFormat;
use crate::cloud::Cloud;
use crate::cloud::limit::Paced;
use crate::config::{Config, LandingZone};
use crate::journal::{self, Journal};
use crate::model::{AccountId, Phase, Plan, Run, TargetRun};
use crate::notify;
use crate::workflow::{self, Clock, Options, Workflow};
use crate::{Error, Outcome, report};

/// Saves what `phase` changed (none: the run's header only) into the
/// journal, and notes the phase done; a failure is logged, not fatal (the
/// changes themselves are journaled step by step).
fn save_phase(j: &journal::Journal, run: &Run, phase: Option<Phase>, backup_waited: bool) {
    let started = std::time::Instant::now();
    if let Err(e) = journal::snapshot::save(j, run, phase, backup_waited) {
        tracing::error!(error = %e, "cannot save the run in the journal");
    }
    if let Some(p) = phase {
        let _ = j.note(run.id.as_str(), "Phase", &format!("{p} done"));
    }
    tracing::debug!(ms = started.elapsed().as_millis(), "journal saved");
}

/// What is saved after the scan: a copy of the run as the scan left it.
struct Checkpoint {
    run: Run,
    phase: Option<Phase>,
    journal: Arc<Journal>,
    /// The inventory to rewrite, if it is.
    csv: Option<std::path::PathBuf>,
    backup_waited: bool,
}

impl Checkpoint {
    /// Saves the phase in the journal and rewrites the inventory, side by
    /// side; returns the inventory's error, if any (the journal's is logged).
    fn write(self) -> Option<Error> {
        let Checkpoint {
            run,
            phase,
            journal,
            csv,
            backup_waited,
        } = self;
        let csv = std::thread::scope(|scope| {
            let csv = csv.as_ref().map(|path| {
                scope.spawn(|| {
                    let started = std::time::Instant::now();
                    let written = write_csv(&run, path);
                    tracing::debug!(ms = started.elapsed().as_millis(), "inventory rewritten");
                    written
                })
            });
            save_phase(&journal, &run, phase, backup_waited);
            csv.map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        });
        match csv {
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot write the inventory");
                Some(e)
            }
            _ => None,
        }
    }
}

/// Waits for the checkpoint in flight, if any; its error, if any.
fn finish_checkpoint(saving: Option<std::thread::JoinHandle<Option<Error>>>) -> Option<Error> {
    let started = std::time::Instant::now();
    let error = saving?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    tracing::debug!(ms = started.elapsed().as_millis(), "checkpoint waited for");
    error
}

/// A run the prod guard refused, told to the notifications that want it;
/// how they went is in the journal (there is no report).
async fn notify_refused(
    config: &Config,
    landing_zones: &[LandingZone],
    options: &Options,
    op: &Operation,
    why: &str,
) {
    if config.notifications.is_empty() {
        return;
    }
    let run_id = options.run_id.as_str();
    let message = notify::Message {
        run_id: run_id.to_owned(),
        event: crate::config::NotifyEvent::Refused,
        headline: format!("refused, nothing changed: {why}"),
        landing_zones: landing_zones.iter().map(|lz| lz.to_string()).collect(),
        failures: Vec::new(),
        failures_total: 0,
        reports: "none: the run was refused before it changed anything".into(),
        summary: serde_json::json!({
            "schema_version": 1,
            "run_id": run_id,
            "outcome": "refused",
            "exit_code": crate::error::EXIT_USAGE,
            "reason": why,
        }),
    };
    for n in notify::send_all(&config.notifications, &message).await {
        tracing::info!(notification = %n, "refusal notified");
        if let Err(e) = op.journal.note(run_id, "Notify", &n.to_string()) {
            tracing::error!(error = %e, "cannot journal a notification");
        }
    }
}

/// The notification of a run's end: its event, counts, first failures.
fn notify_message(run: &Run, dir: &Path, summary: serde_json::Value) -> notify::Message {
    use crate::config::NotifyEvent;
    let event = if run.interrupted {
        NotifyEvent::Interrupted
    } else if run.has_failures() {
        NotifyEvent::Failures
    } else {
        NotifyEvent::Finished
    };
    let count = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let totals = &summary["totals"];
    let lzs = summary["landing_zones"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let landing_zones = lzs
        .iter()
        .map(|lz| {
            let name = lz["name"].as_str().unwrap_or_default();
            match lz["failed"].as_str() {
                Some(why) => format!("{name}: FAILED: {why}"),
                None => format!(
                    "{name}: {} READY, {} NOT READY",
                    count(lz, "ready"),
                    count(lz, "not_ready")
                ),
            }
        })
        .collect();
    let failures = report::summary::failure_lines(run);
    notify::Message {
        run_id: run.id.to_string(),
        event,
        headline: format!(
            "{} landing zone(s), {} instances: {} READY, {} NOT READY{}",
            lzs.len(),
            count(totals, "instances"),
            count(totals, "ready"),
            count(totals, "not_ready"),
            if run.simulated { " (SIMULATED)" } else { "" }
        ),
        landing_zones,
        failures_total: failures.len(),
        failures: failures.into_iter().take(5).collect(),
        reports: dir.display().to_string(),
        summary,
    }
}

/// Where a run's results go: its reports' folder's parent, and how the
/// summary is printed on stdout.
pub struct Output<'a> {
    pub dir: &'a Path,
    pub summary: SummaryFormat,
}

/// Runs the workflow on a cloud and writes the reports, recorded in the
/// journal as an [`Operation`]: its parameters (`params`, JSON), a
/// snapshot after each phase, and through [`journal::Journaled`] every
/// mutating call. A run that changes anything holds the lock on its
/// landing zones while it works.
pub async fn execute<C: Cloud>(
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    options: &Options,
    out: &Output<'_>,
    journal: &Arc<Journal>,
    params: &str,
) -> Result<Outcome, Error> {
    let lz_names: Vec<String> = landing_zones.iter().map(|lz| lz.name.clone()).collect();
    let mutating = !options.dry_run
        && [Phase::AmiBackup, Phase::ServerStart]
            .iter()
            .any(|p| options.plans.get(p).is_none_or(|plan| *plan == Plan::Run));
    let row = journal::NewRun {
        id: options.run_id.as_str(),
        kind: "run",
        of_run: None,
        landing_zones: &lz_names,
        environment: &environments_of(landing_zones),
        params,
        simulated: cloud.is_simulated(),
        dry_run: options.dry_run,
    };
    let op = Operation::begin(
        journal,
        &row,
        landing_zones,
        mutating && !cloud.is_simulated(),
    )?;
    let result = execute_inner(cloud, config, landing_zones, options, out, &op).await;
    if let Err(Error::Refused(why)) = &result {
        notify_refused(config, landing_zones, options, &op, why).await;
    }
    op.finish(&result, None);
    result
}

async fn execute_inner<C: Cloud>(
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    options: &Options,
    out: &Output<'_>,
    op: &Operation,
) -> Result<Outcome, Error> {
    let (output_dir, summary) = (out.dir, out.summary);
    let journal = &op.journal;
    let dir = output_dir.join(options.run_id.as_str());
    crate::files::create_dir(&dir).map_err(|source| Error::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let mut run = run_checkpointed(cloud, config, landing_zones, options, op, &dir).await?;
    let outcome = Outcome {
        failures: run.has_failures(),
        interrupted: run.interrupted,
    };
    if !config.notifications.is_empty() && !run.dry_run {
        // Before the reports, so that report.json says how they went; the
        // reports' paths they give are where the files are about to be.
        let files: Vec<std::path::PathBuf> = config
            .reports
            .formats
            .iter()
            .map(|f| dir.join(f.file_name()))
            .collect();
        let summary_doc = report::summary::json(&run, outcome.code(), &files, &dir, journal.path());
        let message = notify_message(&run, &dir, summary_doc);
        run.notifications = notify::send_all(&config.notifications, &message).await;
        for n in &run.notifications {
            if let Err(e) = journal.note(run.id.as_str(), "Notify", &n.to_string()) {
                tracing::error!(error = %e, "cannot journal a notification");
            }
        }
        save_phase(journal, &run, None, options.wait_backup);
    }
    let meta = run_meta(cloud, config, landing_zones);
    if let Err(e) = serde_json::to_string(&meta)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            journal
                .save_meta(run.id.as_str(), &m)
                .map_err(|e| e.to_string())
        })
    {
        tracing::error!(error = %e, "cannot save the report metadata in the journal");
    }
    // The journal's log is folded in while the reports are written: that
    // waits on the disk, they on the processor.
    let written = std::thread::scope(|scope| {
        scope.spawn(move || {
            let started = std::time::Instant::now();
            if let Err(e) = journal.checkpoint() {
                tracing::warn!(error = %e, "cannot checkpoint the journal");
            }
            tracing::debug!(ms = started.elapsed().as_millis(), "journal checkpointed");
        });
        write_reports(&run, cloud, config, landing_zones, &dir)
    })?;

    match summary {
        SummaryFormat::Text => print_summary(&run, options, cloud, &dir, journal)?,
        SummaryFormat::Json => {
            let mut doc =
                report::summary::json(&run, outcome.code(), &written, &dir, journal.path());
            if !run.notifications.is_empty() {
                doc["notifications"] = serde_json::json!(run.notifications);
            }
            let mut out = crate::console::stdout();
            serde_json::to_writer(&mut out, &doc)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out))
                .map_err(|source| Error::Write {
                    path: "stdout".into(),
                    source,
                })?;
        }
    }
    // Freed on the side: a large run's records take a while to free.
    std::thread::spawn(move || drop(run));
    Ok(outcome)
}

/// Saves the run as it goes: after the scan, its instances and the
/// inventory, on a thread of their own while the backups begin (a large
/// fleet's take a second); then each account-region's part as soon as it
/// is through a phase, so that a crash loses none of it.
struct Saves<'a> {
    journal: &'a Arc<Journal>,
    run_id: &'a str,
    csv: Option<std::path::PathBuf>,
    backup_waited: bool,
    /// The scan's save, until it is waited for.
    scan: std::sync::Mutex<Option<std::thread::JoinHandle<Option<Error>>>>,
    /// The scan's save's error (the inventory's), once waited for.
    error: std::sync::Mutex<Option<Error>>,
}

impl Saves<'_> {
    /// Waits for the scan's save if it is still out. It rewrites the
    /// run's parts from scratch, so nothing else is saved before it ends.
    fn after_scan(&self) {
        let handle = self.scan.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(e) = finish_checkpoint(handle) {
            self.error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
        }
    }
}

impl workflow::Checkpoint for Saves<'_> {
    fn scanned(&mut self, run: &Run) {
        let save = Checkpoint {
            run: run.clone(),
            phase: Some(Phase::Scanner),
            journal: Arc::clone(self.journal),
            csv: self.csv.clone(),
            backup_waited: self.backup_waited,
        };
        *self.scan.get_mut().unwrap_or_else(|e| e.into_inner()) =
            Some(std::thread::spawn(move || save.write()));
    }

    fn target_done(&self, index: usize, target: &TargetRun, phase: Phase) {
        self.after_scan();
        let saved = journal::snapshot::save_target(
            self.journal,
            self.run_id,
            index,
            target,
            phase,
            self.backup_waited,
        );
        if let Err(e) = saved {
            tracing::error!(target_ = %target.target, error = %e, "cannot save the run in the journal");
        }
    }
}

/// Runs the workflow, saving it in the journal and writing the inventory
/// after the scan as it goes; the run, once every save is done.
async fn run_checkpointed<C: Cloud>(
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    options: &Options,
    op: &Operation,
    dir: &Path,
) -> Result<Run, Error> {
    let journal = &op.journal;
    let csv_path = dir.join("inventory.csv");

    let journaled = journal::Journaled::new(cloud, journal, options.run_id.as_str());
    // What earlier attempts of this run made and started, by the journal.
    let witnesses = journal.backup_witnesses(options.run_id.as_str())?;
    let wf = Workflow {
        events: Default::default(),
        cloud: &journaled,
        config,
        options,
        clock: Clock::start(chrono::Utc::now()),
        shutdown: op.shutdown.clone(),
        progress: workflow::progress::Progress::new(options.show_progress),
        witnesses,
    };
    let csv_wanted = config.reports.formats.contains(&report::Format::Csv);
    let mut saves = Saves {
        journal,
        run_id: options.run_id.as_str(),
        csv: csv_wanted.then(|| csv_path.clone()),
        backup_waited: options.wait_backup,
        scan: Default::default(),
        error: Default::default(),
    };
    let interactive = options.interactive;
    let mut confirm = |what: &str| confirm(what, interactive);
    let selected: Vec<&LandingZone> = landing_zones.iter().collect();
    let run = wf.run(&selected, &mut saves, &mut confirm).await;
    saves.after_scan();
    let write_error = saves.error.into_inner().unwrap_or_else(|e| e.into_inner());
    let run = run?;
    // The header, with every phase's summary: saved even if the inventory
    // could not be written.
    save_phase(journal, &run, None, options.wait_backup);
    for p in run.phases.iter().skip(1).filter(|p| p.plan == Plan::Run) {
        let _ = journal.note(run.id.as_str(), "Phase", &format!("{} done", p.phase));
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    Ok(run)
}

/// The plan of a dry run, the summary, and where the reports and the
/// journal are.
fn print_summary<C: Cloud>(
    run: &Run,
    options: &Options,
    cloud: &Paced<C>,
    dir: &Path,
    journal: &Journal,
) -> Result<(), Error> {
    let mut out = crate::console::stdout();
    if run.dry_run {
        print_plan(run, options, &mut out).map_err(|source| Error::Write {
            path: "stdout".into(),
            source,
        })?;
    }
    report::summary::write(run, &cloud.api_calls().snapshot(), &mut out).map_err(|source| {
        Error::Write {
            path: "stdout".into(),
            source,
        }
    })?;
    for n in &run.notifications {
        let _ = writeln!(out, "notified {n}");
    }
    let _ = writeln!(out, "\nreports: {}", dir.display());
    let _ = writeln!(
        out,
        "journal: {} (prepatch runs show {})",
        journal.path().display(),
        run.id
    );
    Ok(())
}

/// Writes the end-of-run reports (the formats the config and `--format`
/// chose) from one report model, each file atomically.
fn write_reports<C: Cloud>(
    run: &Run,
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    dir: &Path,
) -> Result<Vec<std::path::PathBuf>, Error> {
    let started = std::time::Instant::now();
    let meta = run_meta(cloud, config, landing_zones);
    let report = report::Report::new(run, &meta);
    tracing::debug!(ms = started.elapsed().as_millis(), "report model built");
    report::write_all(&report, dir, &config.reports.formats).map_err(|(path, source)| {
        Error::Write {
            path: path.display().to_string(),
            source,
        }
    })
}

/// What the reports say about the run that the run does not know.
fn run_meta<C: Cloud>(
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
) -> report::RunMeta {
    report::RunMeta {
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        command_line: std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        config: report::model::ConfigRef {
            path: config.source.display().to_string(),
            sha256: config.sha256.clone(),
            built_in: config.source == Path::new(BUILT_IN_CONFIG),
        },
        landing_zones: landing_zones
            .iter()
            .map(|lz| report::model::LandingZoneMeta {
                name: lz.name.clone(),
                account_id: lz.account_id.to_string(),
                environment: lz.environment.to_string(),
                regions: lz.regions.iter().map(ToString::to_string).collect(),
                role_arn: lz.role_arn.clone(),
            })
            .collect(),
        api_calls: report::model::ApiCallStat::list(
            &cloud.api_calls().snapshot(),
            &cloud.retries(),
        ),
    }
}

fn write_csv(run: &Run, path: &Path) -> Result<(), Error> {
    report::write_run_file(path, run.simulated, |w| {
        report::csv::write(run, w).map_err(std::io::Error::other)
    })
    .map_err(|source| Error::Write {
        path: path.display().to_string(),
        source,
    })
}

/// What a dry run would have done, per landing zone.
fn print_plan(run: &Run, options: &Options, out: &mut dyn Write) -> std::io::Result<()> {
    let backup = options.plans.get(&Phase::AmiBackup) == Some(&Plan::Run);
    let start = options.plans.get(&Phase::ServerStart) == Some(&Plan::Run);
    writeln!(out, "\ndry run: nothing was changed. The plan:")?;
    let mut per_lz: BTreeMap<(&str, &AccountId), (usize, usize)> = BTreeMap::new();
    for r in run.records() {
        let e = per_lz
            .entry((r.landing_zone.as_str(), &r.account))
            .or_default();
        if backup {
            e.0 += 1;
        }
        if start && workflow::start::wants_start(r.instance.state) {
            e.1 += 1;
        }
    }
    for ((lz, account), (amis, starts)) in per_lz {
        crate::oneline!(
            out,
            "  {lz} ({account}): would create {amis} AMIs and start {starts} stopped instances"
        )?;
    }
    if run.permission_checks.is_empty() {
        return Ok(());
    }
    let denied: Vec<_> = run
        .permission_checks
        .iter()
        .filter(|c| !c.allowed)
        .collect();
    let targets: std::collections::BTreeSet<_> =
        run.permission_checks.iter().map(|c| &c.target).collect();
    if denied.is_empty() {
        crate::oneline!(
            out,
            "permissions (EC2 DryRun): {} checks over {} account-regions, all allowed",
            run.permission_checks.len(),
            targets.len()
        )?;
    } else {
        crate::oneline!(
            out,
            "permissions (EC2 DryRun): {} of {} checks refused; fix the role before a real run:",
            denied.len(),
            run.permission_checks.len()
        )?;
        for c in denied {
            crate::oneline!(
                out,
                "  {} ({}): ec2:{}: {}",
                c.target,
                c.target.account,
                c.action,
                c.error.as_ref().map_or("refused", |f| f.message())
            )?;
        }
    }
    Ok(())
}
