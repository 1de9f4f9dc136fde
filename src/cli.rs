//! Command-line flags (clap derive). The original tool's commands work as
//! they were written:
//!
//! ```text
//! prepatch --landing-zones lz250nonprod,cmsnonprod --environment nonprod
//! prepatch --scanner-only --landing-zones lz250nonprod
//! prepatch --config config/custom.yml --landing-zones lz250prod --environment prod
//! ```

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::Environment;

const EXAMPLES: &str = "\
Examples:
  prepatch demo                                         the full workflow on a simulated fleet, no AWS needed
  prepatch demo --after-patch                           ... then roll back what is NOT READY, release the rest's backups
  prepatch --scanner-only --landing-zones lz250nonprod  inventory only, read-only
  prepatch --landing-zones lz250nonprod --dry-run       scan and show what would change
  prepatch --landing-zones lz250nonprod,cmsnonprod --environment nonprod
  prepatch --environment prod --yes                     every prod landing zone, confirmed
  prepatch --resume latest                              continue the newest interrupted run
  prepatch runs                                         the runs in the journal; `runs show <id>`: a timeline
  prepatch restore --run <id>                           stop what run <id> started, after patching
  prepatch rollback --run <id> --instances i-0abc       put i-0abc's root volume back to run <id>'s backup
  prepatch cleanup --environment nonprod --yes          delete expired prepatch AMIs and their snapshots
  prepatch cleanup --run <id> --yes                     release run <id>'s backups now, whatever their expiry
  prepatch iam-policy run --partition aws-cn            the run role's IAM policy, for the China regions

Exit codes: 0 all READY; 1 finished with failures; 2 usage or config error (nothing done); 130 interrupted.
Reports go to <output-dir>/<run-id>/. Config reference: config/prepatch_config.example.yml";

/// Get fleets of AWS EC2 instances ready for OS patching: scan every
/// landing zone, back up each instance as an AMI, start what is stopped,
/// and validate that each instance is ready.
#[derive(Debug, Parser)]
#[command(name = "prepatch", version, about, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the full workflow on a simulated fleet: no AWS account, no
    /// network, nothing real touched. Simulated time runs fast.
    Demo(DemoArgs),
    /// List the runs in the journal, or show one run's timeline.
    Runs(RunsArgs),
    /// Write a run's reports again from the journal.
    Report(ReportArgs),
    /// After patching: stop exactly the instances a run started, and
    /// remove their prepatch:started-by tag.
    Restore(RestoreArgs),
    /// When a patch broke a server: replace its root volume with the
    /// backup a run made of it (EC2's replace-root-volume task).
    Rollback(RollbackArgs),
    /// Deregister prepatch's expired AMIs (or one run's, with --run) and
    /// delete their snapshots.
    Cleanup(CleanupArgs),
    /// Print the IAM policy a role needs, its ARNs in an AWS partition.
    IamPolicy(IamPolicyArgs),
    /// List the landing zones the config resolves to (name, account,
    /// environment, confirmation, retention, regions, where each comes
    /// from), without touching AWS.
    LandingZones(LandingZonesArgs),
    /// The configuration as prepatch reads it.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, every value with where it came
    /// from (file and line, inventory file, or default).
    Show(ConfigShowArgs),
}

#[derive(Debug, Args)]
pub struct ConfigShowArgs {
    #[command(flatten)]
    pub select: Selection,
}

#[derive(Debug, Args)]
pub struct LandingZonesArgs {
    #[command(flatten)]
    pub select: Selection,
    /// As JSON, one object per landing zone.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IamPolicyArgs {
    /// Which role's policy: `run` (aws.role_name), `restore`
    /// (aws.restore_role_name: restore, rollback and cleanup) or
    /// `organizations` (organizations.role_arn: reads the organization).
    #[arg(value_enum)]
    pub role: PolicyRole,
    /// The partition the role lives in: aws, aws-cn (China) or aws-us-gov
    /// (GovCloud).
    #[arg(long, default_value = "aws", value_parser = ["aws", "aws-cn", "aws-us-gov"])]
    pub partition: String,
}

/// The two shipped IAM policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyRole {
    Run,
    Restore,
    Organizations,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: Option<RunsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// A run's timeline: every change, intent and outcome (the audit trail).
    Show {
        /// The run id.
        run_id: String,
    },
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run whose reports to write again (into <output-dir>/<run-id>/).
    #[arg(long, value_name = "ID")]
    pub run: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The run whose started instances to stop.
    #[arg(long, value_name = "ID")]
    pub run: String,

    /// The YAML config (default: the one the run used).
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// AWS profile for the base credentials (default: the standard chain).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Show what would be stopped; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Confirm stopping instances in prod landing zones without asking.
    #[arg(short, long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("which")
        .required(true)
        .multiple(true)
        .args(["instances", "landing_zones", "all"])
))]
pub struct RollbackArgs {
    /// The run whose backups to roll back to.
    #[arg(long, value_name = "ID")]
    pub run: String,

    /// The instances to roll back, comma-separated.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub instances: Vec<String>,

    /// Every instance the run backed up in these landing zones (of the
    /// run's), comma-separated; with --instances, those of them there.
    #[arg(short, long, value_name = "NAMES", value_delimiter = ',')]
    pub landing_zones: Vec<String>,

    /// Every instance the run backed up.
    #[arg(long, conflicts_with_all = ["instances", "landing_zones"])]
    pub all: bool,

    /// Start a stopped instance first (a root volume is replaced on a
    /// running instance); without it a stopped instance is reported.
    #[arg(long)]
    pub start: bool,

    /// Delete the replaced root volume once its task succeeds (by default
    /// it is kept, detached).
    #[arg(long)]
    pub delete_replaced_volume: bool,

    /// The YAML config (default: the one the run used).
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// AWS profile for the base credentials (default: the run's).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Show the plan and check permissions with EC2's DryRun; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Confirm rolling back instances in prod landing zones without asking.
    #[arg(short, long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub select: Selection,

    /// Instead of prepatch:expires-at: AMIs that AWS says were made more
    /// than DAYS days ago (their CreationDate).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub older_than: Option<u32>,

    /// Instead of prepatch:expires-at: every backup of this run, now (the
    /// patch went well). Without --landing-zones or --environment, the
    /// run's own landing zones, as the journal has them.
    #[arg(long, value_name = "ID", conflicts_with = "older_than")]
    pub run: Option<String>,

    /// Only the backups of these instances, comma-separated.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub instances: Vec<String>,

    /// Show the plan; delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Delete what the plan shows. Without it, only the plan is shown.
    #[arg(short, long)]
    pub yes: bool,
}

/// Where results go and how much is said.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Reports are written to <DIR>/<run-id>/.
    #[arg(
        short,
        long,
        value_name = "DIR",
        default_value = "reports",
        global = true
    )]
    pub output_dir: PathBuf,

    /// Say more (debug logs, error details).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Say less: no progress bars, errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// How the end-of-run summary is printed on stdout: the table (text),
    /// or one JSON object for a pipeline (json; schema/summary.schema.json).
    /// Logs and progress stay on stderr either way.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "text",
        global = true
    )]
    pub summary: SummaryFormat,

    /// The run journal (SQLite). Default: reports.journal from the config,
    /// else <output-dir>/prepatch.db.
    #[arg(long, value_name = "PATH", global = true)]
    pub journal: Option<PathBuf>,

    /// Report files to write, comma-separated: csv, json, html, xml.
    /// Overrides the config's reports.formats (default: all four).
    #[arg(
        long,
        value_enum,
        value_name = "FORMATS",
        value_delimiter = ',',
        global = true
    )]
    pub format: Vec<crate::model::Format>,
}

/// Which phases run and how.
#[derive(Debug, Args, Default, Clone)]
pub struct PhaseArgs {
    /// Phase 1 only: inventory, no change to anything.
    #[arg(long, conflicts_with_all = ["phase", "skip_backup", "skip_start", "skip_validation"])]
    pub scanner_only: bool,

    /// Run one phase alone (after a read-only scan to know the fleet).
    #[arg(long, value_enum, value_name = "PHASE")]
    pub phase: Option<PhaseArg>,

    /// Skip phase 2 (AMI backup).
    #[arg(long)]
    pub skip_backup: bool,

    /// Skip phase 3 (starting stopped instances).
    #[arg(long)]
    pub skip_start: bool,

    /// Skip phase 4 (validation).
    #[arg(long)]
    pub skip_validation: bool,

    /// Create AMIs and move on; validation waits for them instead.
    #[arg(long)]
    pub no_wait_backup: bool,

    /// Scan and print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Confirm changes in prod landing zones without asking.
    #[arg(short, long)]
    pub yes: bool,

    /// Continue an earlier run: its AMIs are found by tag, not made again.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
}

/// The config and the landing zones a command works on, and how to reach
/// them: the same flags for the run and `cleanup`.
#[derive(Debug, Args)]
pub struct Selection {
    /// The YAML config.
    #[arg(
        short,
        long,
        value_name = "PATH",
        default_value = "config/prepatch_config.yml"
    )]
    pub config: PathBuf,

    /// Landing zones to work on, comma-separated (names from the config).
    #[arg(short, long, value_name = "NAMES", value_delimiter = ',')]
    pub landing_zones: Vec<String>,

    /// Every enabled landing zone of this environment (nonprod, preprod,
    /// prod, or any the config names), or a check that the named ones
    /// belong to it.
    #[arg(short, long, value_name = "NAME")]
    pub environment: Option<Environment>,

    /// AWS profile for the base credentials (default: the standard chain).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Regions to use instead of the config's, comma-separated.
    #[arg(long, value_name = "REGIONS", value_delimiter = ',')]
    pub region: Vec<String>,

    /// The original tool's inventory files, or the folder that holds them
    /// (nonprod_landing_zones.yml, prod_landing_zones.yml), comma-separated:
    /// their landing zones are added to the config's.
    #[arg(long, value_name = "PATHS", value_delimiter = ',')]
    pub inventory: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: Selection,

    /// Continue an interrupted run with the parameters the journal has for
    /// it: a run id, or `latest` for the newest interrupted run.
    #[arg(long, value_name = "RUN_ID|latest", conflicts_with_all = ["landing_zones", "environment", "region", "run_id", "scanner_only", "phase", "skip_backup", "skip_start", "skip_validation", "dry_run"])]
    pub resume: Option<String>,

    #[command(flatten)]
    pub phases: PhaseArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Instances in the simulated fleet.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub instances: u32,

    /// Seed of the fleet: the same seed gives the same fleet.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Faults to inject: none, default, all, or a list such as
    /// ami-failed,insufficient-capacity,ssm-never-online,impaired,
    /// ami-stuck,create-image-error,terminated-before-start,
    /// assume-role-denied,region-unreachable,start-denied,rollback-failed.
    #[arg(long, default_value = "default", value_name = "LIST")]
    pub faults: String,

    /// Take workflow settings and landing zones from this config instead
    /// of the built-in demo ones.
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Describe the simulated fleet in YAML (groups of instances per
    /// landing zone and region) instead of generating it from --instances
    /// and --seed. See examples/fleet.yml.
    #[arg(long, value_name = "PATH", conflicts_with = "instances")]
    pub fleet: Option<PathBuf>,

    /// After the workflow, in the same simulated world, what an operator
    /// does once the patch is done: roll the NOT READY instances back to
    /// their backups (`rollback`), and release the backups of the READY
    /// ones (`cleanup --run`).
    #[arg(long, conflicts_with_all = ["dry_run", "scanner_only"])]
    pub after_patch: bool,

    #[command(flatten)]
    pub phases: PhaseArgs,
}

/// How the end-of-run summary is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    AmiBackup,
    ServerStart,
    Validation,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seed_commands_parse() {
        let cli = Cli::parse_from([
            "prepatch",
            "--landing-zones",
            "lz250nonprod,cmsnonprod",
            "--environment",
            "nonprod",
        ]);
        assert_eq!(cli.run.select.landing_zones, ["lz250nonprod", "cmsnonprod"]);
        assert_eq!(
            cli.run.select.environment.as_ref().map(|e| e.as_str()),
            Some("nonprod")
        );
        let cli = Cli::parse_from([
            "prepatch",
            "--scanner-only",
            "--landing-zones",
            "lz250nonprod",
        ]);
        assert!(cli.run.phases.scanner_only);
        let cli = Cli::parse_from([
            "prepatch",
            "--landing-zones",
            "lz250nonprod",
            "--output-dir",
            "custom_reports/",
        ]);
        assert_eq!(cli.output.output_dir, PathBuf::from("custom_reports/"));
    }

    #[test]
    fn format_is_a_global_list() {
        use crate::model::Format;
        let cli = Cli::parse_from(["prepatch", "demo", "--format", "json,html"]);
        assert_eq!(cli.output.format, [Format::Json, Format::Html]);
        let cli = Cli::parse_from(["prepatch", "--format", "xml", "--landing-zones", "a"]);
        assert_eq!(cli.output.format, [Format::Xml]);
        let err = Cli::try_parse_from(["prepatch", "demo", "--format", "jsn"]).unwrap_err();
        assert!(err.to_string().contains("json"), "{err}");
    }
}
