//! prepatch gets fleets of AWS EC2 instances ready for OS patching, across
//! many AWS accounts ("landing zones") and regions, in four phases: scan,
//! AMI backup, start stopped instances, validate.
//!
//! # Layout
//!
//! Dependencies point one way, from the commands down to the model:
//! `commands` → `workflow`, `report`, `journal` → `cloud` → `config` →
//! `model`.
//!
//! - [`commands`]: one file per command (the run, `demo`, `runs`,
//!   `report`, `restore`, `cleanup`), the [`commands::Context`] they
//!   start from, and the lifecycle they share.
//! - [`workflow`]: the four phases and their order.
//! - [`report`]: one report model from the run, written as CSV, JSON, XML
//!   and the HTML dashboard; and the terminal summary.
//! - [`journal`]: the run journal (SQLite): every run, and every mutating
//!   AWS call as an intent before it and an outcome after; the lock that
//!   keeps two runs off the same landing zones.
//! - [`cloud`]: the [`cloud::Cloud`] trait; `aws` (the AWS SDK, and only
//!   there), `sim` (in-memory, for `demo`), `limit` (EC2's rate limits).
//! - [`config`]: YAML, checked once into [`config::Config`]. [`cli`]:
//!   the flags (clap).
//! - [`model`]: the shared vocabulary: ids, instances, a run's record, the
//!   API's actions and failures, the report formats; no SDK types.
//! - [`error`]: the top-level error, how a command ended, and exit codes.
//! - [`notify`]: the end of a run told to Slack, Teams or a JSON endpoint.
//! - [`console`]: the terminal: the progress display and log lines in
//!   words above it.

pub mod cli;
pub mod cloud;
pub mod commands;
pub mod config;
pub mod console;
pub mod error;
pub mod files;
pub mod journal;
pub mod model;
pub mod notify;
pub mod report;
pub mod workflow;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use cli::{Cli, Command};
pub use error::{Error, Outcome};

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
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // In words, one line each; on a terminal above the bars, through
        // the progress display, without the time the bars already show.
        .event_format(console::Words {
            time: !std::io::stderr().is_terminal(),
        })
        .with_writer(console::log_writer)
        .finish()
        .with(tracing_subscriber::filter::filter_fn(|meta| {
            !console::holds_secrets(meta)
        }));
    let _ = subscriber.try_init();
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
    let ctx = commands::Context::new(&cli);
    match &cli.command {
        Some(Command::Demo(demo)) => commands::demo::run(&ctx, demo).await,
        Some(Command::Runs(args)) => commands::runs::run(&ctx, args),
        Some(Command::Report(args)) => commands::report::run(&ctx, args),
        Some(Command::Restore(args)) => commands::restore::run(&ctx, args).await,
        Some(Command::Rollback(args)) => commands::rollback::run(&ctx, args).await,
        Some(Command::Cleanup(args)) => commands::cleanup::run(&ctx, args).await,
        Some(Command::IamPolicy(args)) => commands::iam_policy::run(args),
        Some(Command::LandingZones(args)) => commands::landing_zones::run(&ctx, args).await,
        Some(Command::Config(cli::ConfigCommand::Show(args))) => {
            commands::config_show::run(&ctx, args)
        }
        None => commands::run::run(&ctx).await,
    }
}
