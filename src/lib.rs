//! prepatch gets fleets of AWS EC2 instances ready for OS patching, across
//! many AWS accounts ("landing zones") and regions, in four phases: scan,
//! AMI backup, start stopped instances, validate.
//!
//! # Layout
//!
//! - [`cli`]: flags (clap). [`config`]: YAML, checked once into [`config::Config`].
//! - [`model`]: ids, instances, per-instance results; no SDK types.
//! - [`cloud`]: the [`cloud::Cloud`] trait; `aws` (the AWS SDK, and only
//!   there), `sim` (in-memory, for `demo`), `limit` (EC2's rate limits).
//! - [`workflow`]: the four phases and their order.
//! - [`report`]: one report model from the run, written as CSV, JSON, XML
//!   and the HTML dashboard; and the terminal summary.
//! - [`journal`]: the run journal (SQLite): every run, and every mutating
//!   AWS call as an intent before it and an outcome after; the lock that
//!   keeps two runs off the same landing zones.
//! - [`ops`]: what the journal makes possible: `runs`, `report --run`,
//!   `restore` and retention `cleanup`.
//! - [`error`]: the top-level error and exit codes.

pub mod cli;
pub mod cloud;
pub mod config;
pub mod error;
pub mod journal;
pub mod model;
pub mod ops;
pub mod report;
pub mod workflow;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use cli::{Cli, Command, DemoArgs, EnvironmentArg, PhaseArg, PhaseArgs};
use cloud::Cloud;
use cloud::limit::Paced;
use config::{Config, LandingZone};
pub use error::Error;
use model::{AccountId, Environment, Region, RunId};
use model::{Phase, Plan, Run};
use workflow::{Clock, Confirmation, Options, Shutdown, Workflow};

/// How a run ended, for the exit code.
#[derive(Debug)]
pub struct Outcome {
    pub failures: bool,
    pub interrupted: bool,
}

impl Outcome {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(if self.interrupted {
            error::EXIT_INTERRUPTED
        } else if self.failures {
            error::EXIT_FAILURES
        } else {
            error::EXIT_OK
        })
    }
}

/// Logs go to stderr. On a terminal the progress bars tell the story and
/// only warnings are logged; elsewhere each step is a log line.
pub fn init_logging(cli: &Cli) {
    let level = if cli.output.quiet {
        "error"
    } else if cli.output.verbose {
        "debug"
    } else if std::io::stderr().is_terminal() {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PREPATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("prepatch={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The demo runs on a paused clock, so simulated hours pass in moments;
/// real runs get the multi-threaded runtime.
pub fn runtime_for(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    match cli.command {
        Some(Command::Demo(_)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> Result<Outcome, Error> {
    match &cli.command {
        Some(Command::Demo(demo)) => run_demo(&cli, demo).await,
        Some(Command::Runs(args)) => ops::runs(&cli, args),
        Some(Command::Report(args)) => ops::report(&cli, args),
        Some(Command::Restore(args)) => ops::restore::run(&cli, args).await,
        Some(Command::Cleanup(args)) => ops::cleanup::run(&cli, args).await,
        None => run_aws(&cli).await,
    }
}

/// The journal's path: `--journal`, else the config's `reports.journal`,
/// else `<output-dir>/prepatch.db`.
/// Without a config at hand (`runs`, `report`, `restore`, `--resume`), the
/// default config file is read for `reports.journal` if it is there.
pub fn journal_path(cli: &Cli, config: Option<&Config>) -> std::path::PathBuf {
    if let Some(j) = &cli.output.journal {
        return j.clone();
    }
    let configured = match config {
        Some(c) => c.reports.journal.clone(),
        None => Config::load(&cli.run.config)
            .ok()
            .and_then(|c| c.reports.journal),
    };
    configured.unwrap_or_else(|| cli.output.output_dir.join("prepatch.db"))
}

async fn run_aws(cli: &Cli) -> Result<Outcome, Error> {
    let args = &cli.run;
    let mut params = journal::RunParams {
        config: args.config.clone(),
        landing_zones: args.landing_zones.clone(),
        environment: args.environment.map(|e| match e {
            EnvironmentArg::Nonprod => "nonprod".to_owned(),
            EnvironmentArg::Prod => "prod".to_owned(),
        }),
        regions: args.region.clone(),
        profile: args.profile.clone(),
        scanner_only: args.phases.scanner_only,
        phase: args.phases.phase.map(|p| phase_name(p).to_owned()),
        skip_backup: args.phases.skip_backup,
        skip_start: args.phases.skip_start,
        skip_validation: args.phases.skip_validation,
        no_wait_backup: args.phases.no_wait_backup,
        output_dir: cli.output.output_dir.clone(),
        environments: Default::default(),
    };
    let mut phases = args.phases.clone();
    // The resumed run's row: its record of environments guards it.
    let mut recorded_environment: Option<String> = None;
    let mut resumed: Option<(std::sync::Arc<journal::Journal>, String)> = None;
    if let Some(which) = &args.resume {
        let path = journal_path(cli, None);
        let j = journal::Journal::open_existing(&path)?;
        let row = if which == "latest" {
            j.latest_interrupted()?.ok_or_else(|| {
                Error::Usage(format!(
                    "--resume latest: no interrupted run in {}",
                    path.display()
                ))
            })?
        } else {
            j.run(which)?
        };
        if row.kind != "run" || row.dry_run || row.simulated {
            return Err(Error::Usage(format!(
                "--resume: {} is a {}{}, not a run that can be resumed",
                row.id,
                if row.dry_run { "dry " } else { "" },
                if row.simulated {
                    "demo run"
                } else {
                    row.kind.as_str()
                }
            )));
        }
        if row.status == journal::Status::Complete {
            return Err(Error::Usage(format!(
                "--resume: run {} is complete: nothing to resume",
                row.id
            )));
        }
        params = serde_json::from_str(&row.params).map_err(|e| {
            Error::Usage(format!(
                "--resume: the parameters of run {} in {} cannot be read: {e}",
                row.id,
                path.display()
            ))
        })?;
        phases = PhaseArgs {
            scanner_only: params.scanner_only,
            phase: params.phase.as_deref().and_then(|p| match p {
                "ami-backup" => Some(PhaseArg::AmiBackup),
                "server-start" => Some(PhaseArg::ServerStart),
                "validation" => Some(PhaseArg::Validation),
                _ => None,
            }),
            skip_backup: params.skip_backup,
            skip_start: params.skip_start,
            skip_validation: params.skip_validation,
            no_wait_backup: params.no_wait_backup,
            dry_run: false,
            yes: args.phases.yes,
            run_id: Some(row.id.clone()),
        };
        eprintln!(
            "resuming run {} (landing zones {}; attempt {})",
            row.id,
            row.landing_zones,
            row.attempts + 1
        );
        recorded_environment = Some(row.environment.clone());
        resumed = Some((std::sync::Arc::new(j), row.id));
    }
    let environment = params.environment.as_deref().map(|e| {
        if e == "prod" {
            EnvironmentArg::Prod
        } else {
            EnvironmentArg::Nonprod
        }
    });
    let config = with_cli_formats(Config::load(&params.config)?, cli);
    let mut landing_zones =
        select_landing_zones(&config, &params.landing_zones, environment, &params.regions)?;
    match &recorded_environment {
        // A resume: prod by the record is prod, whatever the config says now.
        Some(env) => params.guard_recorded_prod(&mut landing_zones, env),
        None => {
            params.environments = landing_zones
                .iter()
                .map(|lz| (lz.name.clone(), lz.environment.to_string()))
                .collect()
        }
    }
    let options = options(&config, &phases, cli)?;
    let journal = match resumed {
        Some((j, _)) => j,
        None => std::sync::Arc::new(journal::Journal::open_or_create(&journal_path(
            cli,
            Some(&config),
        ))?),
    };
    let cloud = Paced::new(
        cloud::aws::AwsCloud::connect(cloud::aws::AwsOptions {
            profile: params.profile.clone(),
            endpoint_url: config.aws.endpoint_url.clone(),
            session_duration: config.aws.session_duration,
        })
        .await,
    )
    .with_max_in_flight(config.aws.max_concurrency);
    let params = serde_json::to_string(&params).unwrap_or_default();
    execute_journaled(
        &cloud,
        &config,
        &landing_zones,
        &options,
        &cli.output.output_dir,
        Some((&journal, &params)),
    )
    .await
}

/// The built-in demo fleet: two nonprod landing zones and one prod, each in
/// two regions.
pub fn demo_config() -> Config {
    let text = "\
aws:
  regions: [us-east-1, eu-west-1]
  max_concurrency: 16
landing_zones:
  - {name: demo-app-nonprod, account_id: \"111111111111\", environment: nonprod}
  - {name: demo-data-nonprod, account_id: \"222222222222\", environment: nonprod}
  - {name: demo-core-prod, account_id: \"333333333333\", environment: prod}
";
    // A constant that the unit tests parse: it cannot fail at run time.
    Config::parse(text, Path::new(DEMO_CONFIG_SOURCE))
        .unwrap_or_else(|e| unreachable!("demo config: {e}"))
}

async fn run_demo(cli: &Cli, demo: &DemoArgs) -> Result<Outcome, Error> {
    let config = with_cli_formats(
        match &demo.config {
            Some(path) => Config::load(path)?,
            None => demo_config(),
        },
        cli,
    );
    let faults = cloud::sim::FaultKind::parse_list(&demo.faults)
        .map_err(|e| Error::Usage(format!("--faults: {e}")))?;
    let landing_zones: Vec<LandingZone> = config
        .landing_zones
        .iter()
        .filter(|lz| lz.enabled)
        .cloned()
        .collect();
    if landing_zones.is_empty() {
        return Err(Error::Usage(
            "the demo config has no enabled landing zone".into(),
        ));
    }
    let spec = cloud::sim::FleetSpec {
        landing_zones: landing_zones.clone(),
        instances: demo.instances as usize,
        seed: demo.seed,
        stopped_share: 0.2,
        // With faults off, a clean fleet: every instance can be READY.
        agent_problems: if faults.is_empty() { 0.0 } else { 0.02 },
    };
    let sim = match &demo.fleet {
        Some(path) => cloud::fleet::load(path, &landing_zones).map_err(Error::Usage)?,
        None => cloud::sim::SimCloud::generate(&spec),
    };
    let injected = sim.inject(&faults, &landing_zones, demo.seed);
    let mut phases = demo.phases.clone();
    // Nothing real is touched: the prod guard has nothing to guard.
    phases.yes = true;
    let options = options(&config, &phases, cli)?;
    if !cli.output.quiet {
        let instances: usize = landing_zones
            .iter()
            .flat_map(|lz| {
                lz.regions
                    .iter()
                    .map(|r| sim.instances(&lz.account_id, r).len())
            })
            .sum();
        let from = match &demo.fleet {
            Some(path) => format!("described in {}", path.display()),
            None => format!("seed {}", demo.seed),
        };
        eprintln!(
            "prepatch demo: SIMULATED fleet of {instances} instances in {} landing zones ({from}); no AWS account is used and nothing real is touched.",
            landing_zones.len(),
        );
        for f in &injected {
            eprintln!("  injected fault: {f}");
        }
    }
    let cloud = Paced::new(sim).with_max_in_flight(config.aws.max_concurrency);
    let journal = std::sync::Arc::new(
        journal::Journal::open_or_create(&journal_path(cli, Some(&config)))?.relaxed()?,
    );
    let outcome = execute_journaled(
        &cloud,
        &config,
        &landing_zones,
        &options,
        &cli.output.output_dir,
        Some((&journal, "{}")),
    )
    .await;
    // The simulated fleet is freed on the side: at 100,000 instances that
    // takes longer than anything left to do.
    std::thread::spawn(move || drop(cloud));
    outcome
}

/// Picks the landing zones a run works on: named ones (each must exist and
/// match `--environment`), or every enabled one of an environment.
pub fn select_landing_zones(
    config: &Config,
    names: &[String],
    environment: Option<EnvironmentArg>,
    regions: &[String],
) -> Result<Vec<LandingZone>, Error> {
    let env = environment.map(|e| match e {
        EnvironmentArg::Nonprod => Environment::Nonprod,
        EnvironmentArg::Prod => Environment::Prod,
    });
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
                "name the landing zones to work on with --landing-zones (known: {}), or a whole environment with --environment nonprod|prod",
                known()
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
                "no enabled landing zone has environment {env} in {}",
                config.source.display()
            )));
        }
    } else {
        for name in names {
            let name = name.trim();
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
            if let Some(env) = env {
                if lz.environment != env {
                    return Err(Error::Usage(format!(
                        "landing zone {name} is {}, not {env}: drop --environment or pick {env} landing zones",
                        lz.environment
                    )));
                }
            }
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

/// Reconciles the flags with the config's `workflow.phases`.
fn options(config: &Config, args: &PhaseArgs, cli: &Cli) -> Result<Options, Error> {
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
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        show_progress: !cli.output.quiet && std::io::stderr().is_terminal(),
    })
}

fn phase_name(p: PhaseArg) -> &'static str {
    match p {
        PhaseArg::AmiBackup => "ami-backup",
        PhaseArg::ServerStart => "server-start",
        PhaseArg::Validation => "validation",
    }
}

/// Runs the workflow on a cloud and writes the reports, without a journal.
pub async fn execute<C: Cloud>(
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    options: &Options,
    output_dir: &Path,
) -> Result<Outcome, Error> {
    execute_journaled(cloud, config, landing_zones, options, output_dir, None).await
}

/// The environments of landing zones, as the journal lists them.
pub fn environments_of(landing_zones: &[LandingZone]) -> String {
    let envs: std::collections::BTreeSet<String> = landing_zones
        .iter()
        .map(|lz| lz.environment.to_string())
        .collect();
    envs.into_iter().collect::<Vec<_>>().join(",")
}

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

/// What is saved after a phase: a copy of the run as the phase left it.
struct Checkpoint {
    run: Run,
    phase: Option<Phase>,
    journal: Option<std::sync::Arc<journal::Journal>>,
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
            if let Some(j) = &journal {
                save_phase(j, &run, phase, backup_waited);
            }
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

/// Runs the workflow on a cloud and writes the reports. With a journal
/// (and the run's parameters as JSON), the run is recorded there: its
/// parameters, a snapshot after each phase, and through
/// [`journal::Journaled`] every mutating call; a run that changes
/// anything first takes the lock on its landing zones.
pub async fn execute_journaled<C: Cloud>(
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    options: &Options,
    output_dir: &Path,
    journal: Option<(&std::sync::Arc<journal::Journal>, &str)>,
) -> Result<Outcome, Error> {
    let run_id = options.run_id.as_str().to_owned();
    let lz_names: Vec<String> = landing_zones.iter().map(|lz| lz.name.clone()).collect();
    let mutating = !options.dry_run
        && [Phase::AmiBackup, Phase::ServerStart]
            .iter()
            .any(|p| options.plans.get(p).is_none_or(|plan| *plan == Plan::Run));
    let mut lock: Option<journal::HeldLock> = None;
    let locked = journal.is_some() && mutating && !cloud.is_simulated();
    if let Some((j, params)) = journal {
        if locked {
            lock = Some(j.hold_lock(&run_id, &lz_names, journal::HEARTBEAT_EVERY)?);
        }
        j.begin(&journal::NewRun {
            id: &run_id,
            kind: "run",
            of_run: None,
            landing_zones: &lz_names,
            environment: &environments_of(landing_zones),
            params,
            simulated: cloud.is_simulated(),
            dry_run: options.dry_run,
        })?;
    }
    let result = execute_inner(
        cloud,
        config,
        landing_zones,
        options,
        output_dir,
        journal.map(|(j, _)| j),
    )
    .await;
    if let Some((j, _)) = journal {
        let status = match &result {
            Ok(o) if o.interrupted => journal::Status::Interrupted,
            Ok(o) if o.failures => journal::Status::Failed,
            Ok(_) => journal::Status::Complete,
            Err(_) => journal::Status::Failed,
        };
        let summary = result.as_ref().err().map(ToString::to_string);
        if let Err(e) = j.finish(&run_id, status, summary.as_deref()) {
            tracing::error!(error = %e, "cannot finish the run in the journal");
        }
    }
    drop(lock);
    result
}

async fn execute_inner<C: Cloud>(
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    options: &Options,
    output_dir: &Path,
    journal: Option<&std::sync::Arc<journal::Journal>>,
) -> Result<Outcome, Error> {
    let dir = output_dir.join(options.run_id.as_str());
    std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let csv_path = dir.join("inventory.csv");

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

    let journaled = journal.map(|j| journal::Journaled::new(cloud, j, options.run_id.as_str()));
    // What earlier attempts of this run made and started, by the journal.
    let witnesses = match journal {
        Some(j) => j.backup_witnesses(options.run_id.as_str())?,
        None => Default::default(),
    };
    let wf_cloud: &dyn Cloud = match &journaled {
        Some(j) => j,
        None => cloud,
    };
    let wf = Workflow {
        events: Default::default(),
        cloud: wf_cloud,
        config,
        options,
        clock: Clock::start(chrono::Utc::now()),
        shutdown,
        progress: workflow::progress::Progress::new(options.show_progress),
        witnesses,
    };
    let mut write_error: Option<Error> = None;
    let csv_wanted = config.reports.formats.contains(&report::Format::Csv);
    // After each phase, on a thread of its own while the next phase runs
    // (the phases keep one core busy): the journal's copy of what the phase
    // changed, and the inventory rewritten. A large fleet's take a second.
    // One at a time, in order: each waits for the one before.
    let mut saving: Option<std::thread::JoinHandle<Option<Error>>> = None;
    // Validation is the last phase: nothing would run beside its save, so
    // its part is saved once the workflow returns, from the run itself
    // rather than a copy (a large fleet's copy takes a tenth of a second);
    // the reports then write the inventory.
    let mut unsaved: Option<Phase> = None;
    let mut checkpoint = |run: &Run| {
        if let Some(e) = finish_checkpoint(saving.take()) {
            write_error.get_or_insert(e);
        }
        let phase = run.phases.last().map(|p| p.phase);
        if phase == Some(Phase::Validation) {
            unsaved = phase;
            return;
        }
        let save = Checkpoint {
            run: run.clone(),
            phase,
            journal: journal.cloned(),
            csv: csv_wanted.then(|| csv_path.clone()),
            backup_waited: options.wait_backup,
        };
        saving = Some(std::thread::spawn(move || save.write()));
    };
    let interactive = options.interactive;
    let mut confirm = |what: &str| -> Confirmation {
        if !interactive {
            return Confirmation::No(format!(
                "{what}; pass --yes to confirm (no terminal to ask on)"
            ));
        }
        eprint!("{what}.\nType 'yes' to go ahead: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        match std::io::stdin().read_line(&mut answer) {
            Ok(_) if answer.trim() == "yes" => Confirmation::Yes,
            _ => Confirmation::No("not confirmed".into()),
        }
    };
    let selected: Vec<&LandingZone> = landing_zones.iter().collect();
    let run = wf.run(&selected, &mut checkpoint, &mut confirm).await;
    if let Some(e) = finish_checkpoint(saving.take()) {
        write_error.get_or_insert(e);
    }
    let run = run?;
    if let Some(j) = journal {
        // The last phase's part, if it was left for now, and the header:
        // saved even if an inventory could not be written.
        save_phase(j, &run, unsaved, options.wait_backup);
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    if let Some(j) = journal {
        let meta = run_meta(cloud, config, landing_zones);
        if let Err(e) = serde_json::to_string(&meta)
            .map_err(|e| e.to_string())
            .and_then(|m| j.save_meta(run.id.as_str(), &m).map_err(|e| e.to_string()))
        {
            tracing::error!(error = %e, "cannot save the report metadata in the journal");
        }
    }
    // The journal's log is folded in while the reports are written: that
    // waits on the disk, they on the processor.
    std::thread::scope(|scope| {
        if let Some(j) = journal {
            scope.spawn(move || {
                let started = std::time::Instant::now();
                if let Err(e) = j.checkpoint() {
                    tracing::warn!(error = %e, "cannot checkpoint the journal");
                }
                tracing::debug!(ms = started.elapsed().as_millis(), "journal checkpointed");
            });
        }
        write_reports(&run, cloud, config, landing_zones, &dir)
    })?;

    let mut out = std::io::stdout().lock();
    if run.dry_run {
        print_plan(&run, options, &mut out).map_err(|source| Error::Write {
            path: "stdout".into(),
            source,
        })?;
    }
    report::summary::write(&run, &cloud.api_calls().snapshot(), &mut out).map_err(|source| {
        Error::Write {
            path: "stdout".into(),
            source,
        }
    })?;
    let _ = writeln!(out, "\nreports: {}", dir.display());
    if let Some(j) = journal {
        let _ = writeln!(
            out,
            "journal: {} (prepatch runs show {})",
            j.path().display(),
            run.id
        );
    }
    let outcome = Outcome {
        failures: run.has_failures(),
        interrupted: run.interrupted,
    };
    // Freed on the side: a large run's records take a while to free.
    std::thread::spawn(move || drop(run));
    Ok(outcome)
}

/// Asks on the terminal before a change to production; with no terminal,
/// refuses (pass `--yes`).
pub(crate) fn confirm_on_terminal(what: &str) -> Confirmation {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Confirmation::No(format!(
            "{what}; pass --yes to confirm (no terminal to ask on)"
        ));
    }
    eprint!("{what}.\nType 'yes' to go ahead: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    match std::io::stdin().read_line(&mut answer) {
        Ok(_) if answer.trim() == "yes" => Confirmation::Yes,
        _ => Confirmation::No("not confirmed".into()),
    }
}

/// What the demo's built-in config is called in messages and reports.
const DEMO_CONFIG_SOURCE: &str = "(built-in demo config)";

/// `--format` overrides the config's `reports.formats`.
fn with_cli_formats(mut config: Config, cli: &Cli) -> Config {
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

/// Writes the end-of-run reports (the formats the config and `--format`
/// chose) from one report model, each file atomically.
fn write_reports<C: Cloud>(
    run: &Run,
    cloud: &Paced<C>,
    config: &Config,
    landing_zones: &[LandingZone],
    dir: &Path,
) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let meta = run_meta(cloud, config, landing_zones);
    let report = report::Report::new(run, &meta);
    tracing::debug!(ms = started.elapsed().as_millis(), "report model built");
    report::write_all(&report, dir, &config.reports.formats).map_err(|(path, source)| {
        Error::Write {
            path: path.display().to_string(),
            source,
        }
    })?;
    Ok(())
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
            built_in: config.source == Path::new(DEMO_CONFIG_SOURCE),
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
        writeln!(
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
        writeln!(
            out,
            "permissions (EC2 DryRun): {} checks over {} account-regions, all allowed",
            run.permission_checks.len(),
            targets.len()
        )?;
    } else {
        writeln!(
            out,
            "permissions (EC2 DryRun): {} of {} checks refused; fix the role before a real run:",
            denied.len(),
            run.permission_checks.len()
        )?;
        for c in denied {
            writeln!(
                out,
                "  {} ({}): ec2:{}: {}",
                c.target,
                c.target.account,
                c.action,
                c.error.as_deref().unwrap_or("refused")
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_parses() {
        let c = super::demo_config();
        assert_eq!(c.landing_zones.len(), 3);
    }
}
