//! The commands: each resolves what it works on, then runs through the
//! same lifecycle.
//!
//! - [`run`]: the four phases on AWS (and `--resume`); [`demo`]: the same
//!   on a simulated fleet. Both go through [`execute`].
//! - [`runs`], [`report`]: what the journal holds.
//! - [`restore`], [`rollback`], [`cleanup`]: after the patch.

pub mod cleanup;
pub mod config_show;
pub mod demo;
pub mod execute;
pub mod iam_policy;
pub mod landing_zones;
pub mod report;
pub mod restore;
pub mod rollback;
pub mod run;
pub mod runs;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{Cli, Command, PhaseArg, PhaseArgs};
use crate::cloud::aws::{AwsCloud, AwsOptions};
use crate::cloud::limit::Paced;
use crate::cloud::{Cloud, CloudError};
use crate::config::{self, Config, LandingZone};
use crate::journal::{
    HEARTBEAT_EVERY, HeldLock, Journal, LockKey, NewRun, RunParams, RunRow, Status,
};
use crate::model::{Environment, Phase, Plan, Region, RunId};
use crate::workflow::{Confirmation, Options, Shutdown};
use crate::{Error, Outcome, error};

/// What every command starts from, worked out once: the flags, the
/// config the command reads (when it loads), and the journal's path.
pub struct Context<'a> {
    pub cli: &'a Cli,
    /// The command's config, if its file loads. A command that needs it
    /// calls [`Context::config`], which names the error if it does not.
    config: Option<Config>,
    /// `--journal`, else the config's `reports.journal`, else
    /// `<output-dir>/prepatch.db`.
    pub journal: PathBuf,
}

impl<'a> Context<'a> {
    pub fn new(cli: &'a Cli) -> Context<'a> {
        let file = match &cli.command {
            Some(Command::Demo(d)) => d.config.as_deref(),
            Some(Command::Cleanup(c)) => Some(c.select.config.as_path()),
            Some(Command::LandingZones(l)) => Some(l.select.config.as_path()),
            Some(Command::Config(crate::cli::ConfigCommand::Show(c))) => {
                Some(c.select.config.as_path())
            }
            _ => Some(cli.run.select.config.as_path()),
        };
        let config = file.and_then(|f| Config::load(f).ok());
        if let Some(c) = &config {
            crate::files::share_with_group(c.reports.group_readable);
        }
        let journal = match &cli.output.journal {
            Some(j) => j.clone(),
            None => config
                .as_ref()
                .and_then(|c| c.reports.journal.clone())
                .unwrap_or_else(|| cli.output.output_dir.join("prepatch.db")),
        };
        Context {
            cli,
            config,
            journal,
        }
    }

    /// The config at `path`, with `--format` applied: the one already
    /// loaded if it is that file, else loaded now (a broken file's error
    /// names it).
    pub fn config(&self, path: &Path) -> Result<Config, Error> {
        let config = match &self.config {
            Some(c) if c.source == path => c.clone(),
            _ => Config::load(path)?,
        };
        crate::files::share_with_group(config.reports.group_readable);
        Ok(with_cli_formats(config, self.cli))
    }
}

/// The lifecycle every journaled command goes through (the run, the demo,
/// `restore`, `cleanup`): the lock on its landing zones, kept alive by a
/// heartbeat for as long as it works; its row in the journal, begun and
/// always finished; and Ctrl-C, which asks it to start nothing new and
/// write what it knows (a second Ctrl-C aborts, exit 130).
pub struct Operation {
    pub id: String,
    pub journal: Arc<Journal>,
    /// Set by Ctrl-C.
    pub shutdown: Shutdown,
    lock: Option<HeldLock>,
}

impl Operation {
    /// Takes the lock on the account-regions of `landing_zones` when
    /// `lock` (a command that changes AWS), then records the row.
    pub fn begin(
        journal: &Arc<Journal>,
        row: &NewRun<'_>,
        landing_zones: &[LandingZone],
        lock: bool,
    ) -> Result<Operation, Error> {
        let lock = match lock {
            true => {
                let keys = LockKey::of(landing_zones);
                Some(journal.hold_lock(row.id, &keys, HEARTBEAT_EVERY)?)
            }
            false => None,
        };
        journal.begin(row)?;
        Ok(Operation {
            id: row.id.to_owned(),
            journal: Arc::clone(journal),
            shutdown: on_ctrl_c(),
            lock,
        })
    }

    /// Ends an after-the-patch command (`restore`, `cleanup`, `rollback`)
    /// whose work gave its outcome and one-line summary: tells the
    /// notifications that want it, then records the end and lets the lock
    /// go. `what` names the command in the message.
    pub async fn conclude(
        self,
        config: &Config,
        what: &str,
        result: Result<(Outcome, String), Error>,
        reports: &Path,
    ) -> Result<Outcome, Error> {
        let summary = result.as_ref().ok().map(|(_, line)| line.clone());
        let result = result.map(|(o, _)| o);
        notify_end(config, &self, what, &result, summary.as_deref(), reports).await;
        self.finish(&result, summary.as_deref());
        result
    }

    /// Records how the command ended (`summary`: its one-line result, else
    /// the error's text), then lets the lock go.
    pub fn finish(self, result: &Result<Outcome, Error>, summary: Option<&str>) {
        let status = match result {
            Ok(o) if o.interrupted => Status::Interrupted,
            Ok(o) if o.failures => Status::Failed,
            Ok(_) => Status::Complete,
            Err(_) => Status::Failed,
        };
        let error = result.as_ref().err().map(ToString::to_string);
        let summary = summary.or(error.as_deref());
        if let Err(e) = self.journal.finish(&self.id, status, summary) {
            tracing::error!(error = %e, id = %self.id, "cannot finish the journal's record");
        }
        drop(self.lock);
    }
}

/// A past run that `restore` or `rollback` acts on, read from the journal:
/// its row, its parameters, and the config it used (or `config`), with
/// its inventory files. A demo, a dry run or another kind of row is
/// refused with `what` ("whose starts can be restored").
pub(crate) struct PastRun {
    pub journal: Arc<Journal>,
    pub row: RunRow,
    pub params: RunParams,
    pub config: Config,
}

pub(crate) fn past_run(
    ctx: &Context<'_>,
    run_id: &str,
    config: Option<&PathBuf>,
    what: &str,
) -> Result<PastRun, Error> {
    let path = &ctx.journal;
    let journal = Arc::new(Journal::open_existing(path)?);
    let row = journal.run(run_id)?;
    checked_from_journal(&row.id, &row.landing_zones, path)?;
    if row.kind != "run" || row.simulated || row.dry_run {
        return Err(Error::Usage(format!(
            "{} is a {}, not a run {what}",
            row.id,
            if row.simulated {
                "demo run (the demo goes on after the patch with `prepatch demo --after-patch`)"
            } else if row.dry_run {
                "dry run"
            } else {
                row.kind.as_str()
            }
        )));
    }
    let params: RunParams = serde_json::from_str(&row.params).map_err(|e| {
        Error::Usage(format!(
            "the parameters of run {} in {} cannot be read: {e}",
            row.id,
            path.display()
        ))
    })?;
    let mut config = ctx.config(config.unwrap_or(&params.config))?;
    config.add_inventory(&params.inventory)?;
    config.add_recorded(&params.discovered)?;
    Ok(PastRun {
        journal,
        row,
        params,
        config,
    })
}

/// A run id and landing-zone names read back from the journal, checked
/// before they name a folder or are matched against the config: a journal
/// is a file, and one edited to hold `../..` must not turn a report's
/// folder into someone else's. `landing_zones` is comma-separated, as the
/// runs table keeps it.
pub(crate) fn checked_from_journal(
    run_id: &str,
    landing_zones: &str,
    journal: &Path,
) -> Result<RunId, Error> {
    let refuse = |what: String| {
        Error::Usage(format!(
            "run journal {} holds {what}, which prepatch never writes: the file was changed by hand or by another tool; use another journal (--journal)",
            journal.display()
        ))
    };
    let id = run_id
        .parse::<RunId>()
        .map_err(|_| refuse(format!("the run id {:?}", crate::console::visible(run_id))))?;
    for name in landing_zones
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if !config::valid_lz_name(name) {
            return Err(refuse(format!(
                "the landing-zone name {:?} in run {id}",
                crate::console::visible(name)
            )));
        }
    }
    Ok(id)
}

/// Tells the end of an after-the-patch command to the notifications that
/// want it, as a run's end is told, and journals how each went.
async fn notify_end(
    config: &Config,
    op: &Operation,
    what: &str,
    result: &Result<Outcome, Error>,
    summary: Option<&str>,
    reports: &Path,
) {
    use crate::config::NotifyEvent;
    if config.notifications.is_empty() {
        return;
    }
    let event = match result {
        Ok(o) if o.interrupted => NotifyEvent::Interrupted,
        Ok(o) if o.failures => NotifyEvent::Failures,
        Ok(_) => NotifyEvent::Finished,
        Err(Error::Refused(_)) => NotifyEvent::Refused,
        // A usage or journal error: nothing was done, nothing to tell.
        Err(_) => return,
    };
    let line = match (result, summary) {
        (_, Some(s)) => s.to_owned(),
        (Err(e), None) => e.to_string(),
        (Ok(_), None) => String::new(),
    };
    let message = crate::notify::Message {
        run_id: op.id.clone(),
        event,
        headline: format!("{what}: {line}"),
        landing_zones: Vec::new(),
        failures: Vec::new(),
        failures_total: 0,
        reports: reports.display().to_string(),
        summary: serde_json::json!({
            "schema_version": 1,
            "run_id": op.id,
            "command": what,
            "outcome": event.name(),
            "exit_code": match result {
                Ok(o) => o.code(),
                Err(e) => if matches!(e, Error::Write { .. }) { error::EXIT_FAILURES } else { error::EXIT_USAGE },
            },
            "summary": line,
            "reports": reports.display().to_string(),
        }),
    };
    for n in crate::notify::send_all(&config.notifications, &message).await {
        tracing::info!(notification = %n, "notified");
        if let Err(e) = op.journal.note(&op.id, "Notify", &n.to_string()) {
            tracing::error!(error = %e, "cannot journal a notification");
        }
    }
}

/// A shutdown that Ctrl-C triggers: the command starts nothing new and
/// writes what it knows; a second Ctrl-C exits at once.
fn on_ctrl_c() -> Shutdown {
    let (stop, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            // Not eprintln!: a closed stderr must not turn Ctrl-C into a panic.
            let _ = writeln!(
                std::io::stderr(),
                "interrupted: finishing calls in flight and writing reports (Ctrl-C again to abort)"
            );
            let _ = stop.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(i32::from(error::EXIT_INTERRUPTED));
            }
        }
    });
    shutdown
}

/// The AWS SDK behind EC2's pacing, with at most `aws.max_concurrency`
/// requests in flight: the cloud of every command that reaches AWS.
/// Adds the landing zones the config takes from AWS Organizations, read
/// now; nothing when it takes none. A listing that fails is an error
/// before anything is changed.
pub(crate) async fn discover(
    config: &mut Config,
    cloud: &AwsCloud,
) -> Result<config::Discovered, Error> {
    let Some(org) = &config.organizations else {
        return Ok(config::Discovered::default());
    };
    let accounts = cloud
        .organization_accounts(org.role_arn.as_deref(), &org.ous, org.reads_tags())
        .await
        .map_err(|e| Error::Organizations(format!("cannot list the accounts: {e}")))?;
    let found = config.add_organization(&accounts)?;
    tracing::info!(
        accounts = accounts.len(),
        landing_zones = found.added.len(),
        skipped = found.skipped.len(),
        "organization read"
    );
    Ok(found)
}

pub async fn connect_aws(profile: Option<String>, config: &Config) -> Paced<AwsCloud> {
    Paced::new(
        AwsCloud::connect(AwsOptions {
            profile,
            endpoint_url: config.aws.endpoint_url.clone(),
            session_duration: config.aws.session_duration,
        })
        .await,
    )
    .with_max_in_flight(config.aws.max_concurrency)
}

/// Works on every account-region of `landing_zones` at once, as restore
/// and cleanup do: each landing zone's role is assumed once, then `f` runs
/// for each of its regions with the answer. Results in landing-zone order,
/// then region order.
pub(crate) async fn for_each_region<'a, T, F, Fut>(
    cloud: &'a dyn Cloud,
    landing_zones: &'a [LandingZone],
    session: &'a str,
    f: F,
) -> Vec<T>
where
    F: Fn(&'a LandingZone, &'a Region, Result<(), CloudError>) -> Fut + Copy,
    Fut: Future<Output = T>,
{
    let per_lz = landing_zones.iter().map(|lz| async move {
        let assumed = cloud.assume_role(lz, session).await.map(drop);
        let regions = lz.regions.iter().map(|r| f(lz, r, assumed.clone()));
        futures::future::join_all(regions).await
    });
    futures::future::join_all(per_lz)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The environments of landing zones, as the journal lists them.
pub fn environments_of(landing_zones: &[LandingZone]) -> String {
    let envs: std::collections::BTreeSet<String> = landing_zones
        .iter()
        .map(|lz| lz.environment.to_string())
        .collect();
    envs.into_iter().collect::<Vec<_>>().join(",")
}

/// What the messages and reports call the demo's built-in config.
pub(crate) const BUILT_IN_CONFIG: &str = "(built-in demo config)";

/// Reconciles the flags with the config's `workflow.phases`.
pub(super) fn options(config: &Config, args: &PhaseArgs, cli: &Cli) -> Result<Options, Error> {
    let p = &config.phases;
    let mut plans = BTreeMap::new();
    let configured = [
        (
            Phase::AmiBackup,
            p.ami_backup.enabled,
            args.skip_backup,
            "--skip-backup",
            PhaseArg::AmiBackup,
        ),
        (
            Phase::ServerStart,
            p.server_start.enabled,
            args.skip_start,
            "--skip-start",
            PhaseArg::ServerStart,
        ),
        (
            Phase::Validation,
            p.validation.enabled,
            args.skip_validation,
            "--skip-validation",
            PhaseArg::Validation,
        ),
    ];
    for (phase, enabled, skipped, flag, arg) in configured {
        let plan = if args.scanner_only {
            Plan::Skip("--scanner-only".into())
        } else if args.phase.is_some_and(|only| only != arg) {
            Plan::Skip(format!(
                "--phase {}",
                args.phase.map(phase_name).unwrap_or_default()
            ))
        } else if skipped {
            Plan::Skip(flag.into())
        } else if !enabled {
            Plan::Skip(format!(
                "disabled in config (workflow.phases.{}.enabled)",
                phase.name().replace('-', "_")
            ))
        } else {
            Plan::Run
        };
        plans.insert(phase, plan);
    }
    let run_id = match &args.run_id {
        Some(id) => id
            .parse::<RunId>()
            .map_err(|e| Error::Usage(format!("--run-id: {e}")))?,
        None => RunId::generate(chrono::Utc::now()),
    };
    Ok(Options {
        run_id,
        plans,
        dry_run: args.dry_run,
        assume_yes: args.yes,
        wait_backup: p.ami_backup.wait && !args.no_wait_backup,
        interactive: interactive(),
        show_progress: !cli.output.quiet && std::io::stderr().is_terminal(),
    })
}

pub(super) fn phase_name(p: PhaseArg) -> &'static str {
    match p {
        PhaseArg::AmiBackup => "ami-backup",
        PhaseArg::ServerStart => "server-start",
        PhaseArg::Validation => "validation",
    }
}

/// Picks the landing zones a run works on: named ones (each must exist and
/// match `--environment`), or every enabled one of an environment.
pub fn select_landing_zones(
    config: &Config,
    names: &[String],
    environment: Option<Environment>,
    regions: &[String],
) -> Result<Vec<LandingZone>, Error> {
    let env = environment;
    let known = || {
        config
            .landing_zones
            .iter()
            .map(|lz| lz.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut selected: Vec<LandingZone> = Vec::new();
    if names.is_empty() {
        let Some(env) = env else {
            return Err(Error::Usage(format!(
                "name the landing zones to work on with --landing-zones (known: {}), or a whole environment with --environment {}",
                known(),
                environments(config)
            )));
        };
        selected.extend(
            config
                .landing_zones
                .iter()
                .filter(|lz| lz.enabled && lz.environment == env)
                .cloned(),
        );
        if selected.is_empty() {
            return Err(Error::Usage(format!(
                "no enabled landing zone has environment {env} in {} (its environments: {})",
                config.source.display(),
                environments(config)
            )));
        }
    } else {
        for name in names {
            let lz = named(config, name.trim(), env.as_ref(), &known)?;
            if !selected.iter().any(|s| s.name == lz.name) {
                selected.push(lz.clone());
            }
        }
    }
    if !regions.is_empty() {
        let regions: Vec<Region> = regions
            .iter()
            .map(|r| {
                r.trim().parse().map_err(|()| {
                    Error::Usage(format!(
                        "--region: {r:?} is not an AWS region name (like us-east-1)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        for lz in &mut selected {
            lz.regions = regions.clone();
        }
    }
    Ok(selected)
}

/// The landing zones whose changes need confirmation, by name.
pub(crate) fn needs_confirmation(landing_zones: &[LandingZone]) -> BTreeSet<&str> {
    landing_zones
        .iter()
        .filter(|lz| lz.confirm)
        .map(|lz| lz.name.as_str())
        .collect()
}

/// `a, b, c`.
pub(crate) fn names_of(names: &BTreeSet<&str>) -> String {
    names.iter().copied().collect::<Vec<_>>().join(", ")
}

/// The environments of the config's landing zones, `a|b|c`.
fn environments(config: &Config) -> String {
    let names: BTreeSet<&str> = config
        .landing_zones
        .iter()
        .map(|lz| lz.environment.as_str())
        .collect();
    names.into_iter().collect::<Vec<_>>().join("|")
}

/// The landing zone `name`, if it exists, is enabled and (with
/// `--environment`) belongs to `env`; else why not, in one line.
fn named<'c>(
    config: &'c Config,
    name: &str,
    env: Option<&Environment>,
    known: &dyn Fn() -> String,
) -> Result<&'c LandingZone, Error> {
    if !config::valid_lz_name(name) {
        return Err(Error::Usage(format!(
            "{name:?} is not a landing zone name (letters, digits, '-', '_'); known: {}",
            known()
        )));
    }
    let Some(lz) = config.landing_zone(name) else {
        return Err(Error::Usage(format!(
            "unknown landing zone {name:?}; known in {}: {}",
            config.source.display(),
            known()
        )));
    };
    if !lz.enabled {
        return Err(Error::Usage(format!(
            "landing zone {name} is disabled in {} (enabled: false)",
            config.source.display()
        )));
    }
    if let Some(env) = env
        && lz.environment != *env
    {
        return Err(Error::Usage(format!(
            "landing zone {name} is {}, not {env}: drop --environment or pick {env} landing zones",
            lz.environment
        )));
    }
    Ok(lz)
}

/// Whether there is an operator to ask: stdin and stderr are a terminal.
fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks on the terminal before a change to production; with no terminal
/// (`interactive` false), refuses: pass `--yes`.
pub(crate) fn confirm(what: &str, interactive: bool) -> Confirmation {
    if !interactive {
        return Confirmation::No(format!(
            "{what}; pass --yes to confirm (no terminal to ask on)"
        ));
    }
    let _ = write!(
        crate::console::stderr(),
        "{what}.\nType 'yes' to go ahead: "
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    match std::io::stdin().read_line(&mut answer) {
        Ok(_) if answer.trim() == "yes" => Confirmation::Yes,
        _ => Confirmation::No("not confirmed".into()),
    }
}

/// `--format` overrides the config's `reports.formats`.
pub(super) fn with_cli_formats(mut config: Config, cli: &Cli) -> Config {
    if !cli.output.format.is_empty() {
        let mut formats = Vec::new();
        for f in &cli.output.format {
            if !formats.contains(f) {
                formats.push(*f);
            }
        }
        config.reports.formats = formats;
    }
    config
}

/// A failed write to stdout.
pub(crate) fn stdout_error(source: std::io::Error) -> Error {
    Error::Write {
        path: "stdout".into(),
        source,
    }
}
