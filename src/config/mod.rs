//! The YAML configuration: parsed into `Raw*` types (serde), then checked
//! once into [`Config`]. Nothing after this module re-checks the config.
//!
//! Errors name the file, the field path and the bad value, and say what is
//! allowed: `landing_zones[1].account_id: "12345" is not a 12-digit account id`.
//!
//! - this file: the checked [`Config`] and how it is loaded.
//! - `raw`: the YAML's shape (`Raw*`, serde) and parse errors made
//!   readable.
//! - `check`: the checks that make a [`Config`] of it.
//! - `inventory`: the original tool's inventory files, merged in.

mod check;
mod inventory;
mod organizations;
mod raw;
mod show;

pub use organizations::{Discovered, RecordedLandingZone};

use crate::model::{TagMap, Tags};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::Format;
use crate::model::{AccountId, Environment, InstanceId, Region};

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {path} not found: copy config/prepatch_config.example.yml there, or pass --config PATH"
    )]
    Missing { path: PathBuf },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: malformed YAML: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// The shortest `ami_backup.retention_days` a config may give. Cleanup
/// believes no `prepatch:expires-at` tag that is earlier than an AMI's
/// creation plus this, when the journal does not have its run.
pub const MIN_RETENTION_DAYS: u32 = 1;

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from (for messages and the report's digest).
    pub source: PathBuf,
    pub aws: Aws,
    pub landing_zones: Vec<LandingZone>,
    pub phases: Phases,
    pub filters: Filters,
    pub reports: Reports,
    /// The original tool's inventory files (or folders) the config names
    /// (`inventory:`), relative to the config's folder: their landing
    /// zones are in `landing_zones` once loaded.
    pub inventory: Vec<PathBuf>,
    /// Where the end of a run is announced.
    pub notifications: Vec<Notification>,
    /// What each environment the config names asks (`environments:`); an
    /// environment it does not name needs confirmation if it is `prod`,
    /// and keeps `ami_backup.retention_days`.
    pub environments: BTreeMap<Environment, EnvironmentPolicy>,
    /// Landing zones taken from AWS Organizations (`organizations:`), found
    /// when a command asks ([`Config::add_organization`]).
    pub organizations: Option<Organizations>,
    /// SHA-256 of the exact text that was parsed, lowercase hex, for the
    /// reports: which config a run used.
    pub sha256: String,
}

/// Where `organizations:` takes landing zones from, and how it names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organizations {
    /// The role that reads the organization (management account or
    /// delegated administrator); else the runner's own credentials.
    pub role_arn: Option<String>,
    /// Accounts under these OUs (or roots), recursively; empty: all.
    pub ous: Vec<String>,
    /// Only accounts with every one of these tags.
    pub account_tags: BTreeMap<String, String>,
    pub exclude: BTreeSet<AccountId>,
    pub name: Rule,
    pub environment: Rule,
    /// `None`: `aws.regions`.
    pub regions: Option<Rule>,
}

impl Organizations {
    /// Whether discovery needs each account's tags.
    pub fn reads_tags(&self) -> bool {
        !self.account_tags.is_empty()
            || self.name.reads_tags()
            || self.environment.reads_tags()
            || self.regions.as_ref().is_some_and(Rule::reads_tags)
    }
}

/// How a landing zone's name, environment or regions come from its
/// account: an account tag's value, the account's name, or a fixed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    Tag(String),
    AccountName,
    Fixed(String),
}

impl Rule {
    /// `tag:<key>`, `account-name`, or a fixed value.
    pub fn parse(text: &str) -> Rule {
        match text.strip_prefix("tag:") {
            Some(key) => Rule::Tag(key.to_owned()),
            None if text == "account-name" => Rule::AccountName,
            None => Rule::Fixed(text.to_owned()),
        }
    }

    pub fn reads_tags(&self) -> bool {
        matches!(self, Rule::Tag(_))
    }

    /// The value for `account`, or why there is none.
    pub fn value_of(&self, account: &crate::model::OrgAccount) -> Result<String, String> {
        match self {
            Rule::Tag(key) => account
                .tags
                .get(key)
                .cloned()
                .ok_or_else(|| format!("it has no {key} tag")),
            Rule::AccountName => Ok(account.name.clone()),
            Rule::Fixed(v) => Ok(v.clone()),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Tag(k) => write!(f, "tag:{k}"),
            Rule::AccountName => f.write_str("account-name"),
            Rule::Fixed(v) => f.write_str(v),
        }
    }
}

/// What an environment asks of changes to its landing zones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvironmentPolicy {
    /// Changes need a typed `yes` or `--yes` (default: only for `prod`).
    pub confirm: bool,
    /// How long its backups live, in place of `ami_backup.retention_days`.
    pub retention_days: Option<u32>,
}

/// A place the end of a run is announced: a chat's incoming webhook or
/// any URL that takes the run's summary as JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// How it is named in the summary, the report and the journal.
    pub name: String,
    pub format: NotifyFormat,
    /// The environment variable the URL was read from (named in messages;
    /// the URL never is).
    pub url_env: String,
    pub url: Secret,
    pub events: BTreeSet<NotifyEvent>,
    /// Per attempt.
    pub timeout: Duration,
    pub attempts: u32,
}

/// A notification's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotifyFormat {
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams incoming webhook (an Adaptive Card).
    Teams,
    /// The run's summary as a JSON document, for an ITSM endpoint.
    Json,
}

impl NotifyFormat {
    pub fn name(self) -> &'static str {
        match self {
            NotifyFormat::Slack => "slack",
            NotifyFormat::Teams => "teams",
            NotifyFormat::Json => "json",
        }
    }
}

/// How a run ended, as notifications filter on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotifyEvent {
    /// Finished, every instance READY.
    Finished,
    /// Finished with NOT READY instances or failed steps.
    Failures,
    /// Refused before any change (the prod guard).
    Refused,
    /// Stopped by Ctrl-C.
    Interrupted,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 4] = [
        NotifyEvent::Finished,
        NotifyEvent::Failures,
        NotifyEvent::Refused,
        NotifyEvent::Interrupted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NotifyEvent::Finished => "finished",
            NotifyEvent::Failures => "failures",
            NotifyEvent::Refused => "refused",
            NotifyEvent::Interrupted => "interrupted",
        }
    }
}

/// A value that never shows in logs, reports or the journal: its Debug
/// says it is hidden.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Which report files a run writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reports {
    /// In the order given, without repeats. Default: all of them.
    pub formats: Vec<Format>,
    /// The run journal (SQLite). Default: `<output-dir>/prepatch.db`.
    pub journal: Option<PathBuf>,
    /// New report folders and files (and the journal) readable by the
    /// group as well (0750, 0640). Default: the owner's alone (0700, 0600).
    pub group_readable: bool,
}

#[derive(Clone, Debug)]
pub struct Aws {
    pub regions: Vec<Region>,
    pub role_name: String,
    /// The role `restore` and `cleanup` assume (stop, deregister, delete),
    /// when it is not the run's: see the README's two-role setup.
    pub restore_role_name: Option<String>,
    pub session_duration: Duration,
    pub endpoint_url: Option<String>,
    /// How many account-regions are worked on at once.
    pub max_concurrency: usize,
}

/// One AWS account that prepatch works in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LandingZone {
    pub name: String,
    pub account_id: AccountId,
    pub environment: Environment,
    /// Changes need confirmation: its environment's `confirm` (a run's
    /// record can only add it, never take it away).
    pub confirm: bool,
    /// How many days its backups live: its environment's
    /// `retention_days`, else `ami_backup.retention_days`.
    pub retention_days: u32,
    /// Where it is defined: `<file> (landing_zones[i])`, both places for
    /// one listed twice.
    pub origin: String,
    pub regions: Vec<Region>,
    /// The role to assume in the account.
    pub role_arn: String,
    /// The role `restore` and `cleanup` assume in this account: the
    /// `aws.restore_role_name` role, else the run's.
    pub restore_role_arn: String,
    pub enabled: bool,
    /// The `sts:ExternalId` to give when assuming either role.
    pub external_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Phases {
    pub scanner: Scanner,
    pub ami_backup: AmiBackup,
    pub server_start: ServerStart,
    pub validation: Validation,
}

#[derive(Clone, Debug)]
pub struct Scanner {
    pub enabled: bool,
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct AmiBackup {
    pub enabled: bool,
    pub retention_days: u32,
    pub timeout: Duration,
    /// Create images without rebooting the instance (the default): a backup
    /// must never reboot a production server as a side effect. With `false`
    /// EC2 reboots each running instance for a file-system-consistent image.
    pub no_reboot: bool,
    /// Wait until every AMI is available before moving on.
    pub wait: bool,
    /// Set EC2 image deprecation at `prepatch:expires-at` on each new AMI,
    /// so the console shows expired backups as deprecated.
    pub deprecate_at_expiry: bool,
    /// Back up instances that belong to an EC2 Auto Scaling group (the
    /// default; each is named in the report as its group's).
    pub auto_scaling_members: bool,
    /// The team's own tags (`ami_backup.tags`), set on every AMI and its
    /// snapshots in the same `CreateImage` as prepatch's.
    pub tags: Tags,
}

#[derive(Clone, Debug)]
pub struct ServerStart {
    pub enabled: bool,
    pub wait_timeout: Duration,
    /// Start an instance only once its AMI exists (the default).
    pub require_backup: bool,
    /// Start stopped instances that belong to an Auto Scaling group (off
    /// by default: a stopped member is in Standby or a warm pool, and its
    /// group owns its state).
    pub auto_scaling_members: bool,
}

#[derive(Clone, Debug)]
pub struct Validation {
    pub enabled: bool,
    pub health_checks: bool,
    pub ssm_ping: bool,
    /// How long to wait for agents and status checks to settle after starts.
    pub timeout: Duration,
}

/// Which instances are in scope.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// An instance must carry one of the listed values for every key here.
    pub include_tags: BTreeMap<String, BTreeSet<String>>,
    /// An instance carrying any listed value for a key here is left out.
    pub exclude_tags: BTreeMap<String, BTreeSet<String>>,
    pub include_instance_ids: BTreeSet<InstanceId>,
    pub exclude_instance_ids: BTreeSet<InstanceId>,
}

impl Filters {
    /// True if an instance with these id and tags is in scope.
    pub fn admits(&self, id: &InstanceId, tags: &TagMap) -> bool {
        if self.exclude_instance_ids.contains(id) {
            return false;
        }
        if !self.include_instance_ids.is_empty() && !self.include_instance_ids.contains(id) {
            return false;
        }
        let has = |key: &String, values: &BTreeSet<String>| {
            tags.get(key)
                .is_some_and(|v| values.is_empty() || values.contains(v))
        };
        self.include_tags.iter().all(|(k, v)| has(k, v))
            && !self.exclude_tags.iter().any(|(k, v)| has(k, v))
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let mut config = Config::parse(&text, path)?;
        let inventory = config.inventory.clone();
        config.add_inventory(&inventory)?;
        Ok(config)
    }

    /// Checks YAML text; `path` is used only in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = raw::parse_raw(text, path)?;
        let mut config = check::check(raw, path)?;
        config.sha256 = sha256_hex(text.as_bytes());
        Ok(config)
    }

    /// The landing zone with this name.
    pub fn landing_zone(&self, name: &str) -> Option<&LandingZone> {
        self.landing_zones.iter().find(|lz| lz.name == name)
    }

    /// Sets each landing zone's confirmation and retention from what its
    /// environment asks (`environments:`; else confirmation for `prod`
    /// only, and `ami_backup.retention_days`).
    pub(crate) fn apply_environments(&mut self) {
        for lz in &mut self.landing_zones {
            let policy = self.environments.get(&lz.environment);
            lz.confirm = policy.map_or_else(|| lz.environment.is_prod(), |p| p.confirm);
            lz.retention_days = policy
                .and_then(|p| p.retention_days)
                .unwrap_or(self.phases.ami_backup.retention_days);
        }
    }

    /// How many days the backups of the landing zone `name` live: its
    /// environment's `retention_days`, else `ami_backup.retention_days`.
    pub fn retention_days(&self, name: &str) -> u32 {
        self.landing_zone(name)
            .map_or(self.phases.ami_backup.retention_days, |lz| {
                lz.retention_days
            })
    }
}

pub const DEFAULT_ROLE_NAME: &str = "PrePatchRole";
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Landing zone names appear in tags, file names and reports: keep them plain.
pub fn valid_lz_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl LandingZone {
    /// The landing zone as `restore` and `cleanup` reach it: through the
    /// restore role.
    pub fn with_restore_role(mut self) -> LandingZone {
        self.role_arn = self.restore_role_arn.clone();
        self
    }
}

impl fmt::Display for LandingZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {})",
            self.name, self.account_id, self.environment
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("c.yml")).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "
landing_zones:
  - name: lz250nonprod
    account_id: \"111111111111\"
    environment: nonprod
";

    #[test]
    fn minimal_config_takes_defaults() {
        let c = parse(MINIMAL).unwrap();
        let lz = &c.landing_zones[0];
        assert_eq!(lz.role_arn, "arn:aws:iam::111111111111:role/PrePatchRole");
        assert_eq!(lz.regions, vec![Region::from_trusted("us-east-1")]);
        assert!(c.phases.ami_backup.no_reboot);
        assert_eq!(c.phases.ami_backup.retention_days, 7);
    }

    #[test]
    fn bad_account_id_names_field_and_value() {
        let err = parse(&MINIMAL.replace("111111111111", "12345")).unwrap_err();
        assert_eq!(
            err,
            "c.yml: landing_zones[0].account_id: \"12345\" is not a 12-digit account id \
             (quote it in YAML so leading zeros survive: \"012345678901\")"
        );
    }

    #[test]
    fn unknown_key_suggests_the_right_one() {
        let err = parse(&format!("{MINIMAL}aws:\n  regoins: [us-east-1]\n")).unwrap_err();
        assert!(err.starts_with("c.yml: aws"), "{err}");
        assert!(
            err.contains("unknown key `regoins` (did you mean `regions`?)"),
            "{err}"
        );
    }

    #[test]
    fn malformed_yaml_gives_line_and_column() {
        let err = parse("landing_zones:\n  - name: [unclosed\n").unwrap_err();
        assert!(err.starts_with("c.yml:3:"), "{err}");
        assert!(err.contains("malformed YAML"), "{err}");
    }

    #[test]
    fn filters_admit_by_tag_and_id() {
        let c = parse(&format!(
            "{MINIMAL}filters:\n  include_tags:\n    PatchGroup: [web, db]\n  exclude_instance_ids: [i-0bad]\n"
        ))
        .unwrap();
        let tags = |v: &str| TagMap::from_iter([("PatchGroup".to_owned(), v.to_owned())]);
        assert!(c.filters.admits(&InstanceId::new("i-01"), &tags("web")));
        assert!(!c.filters.admits(&InstanceId::new("i-01"), &tags("batch")));
        assert!(!c.filters.admits(&InstanceId::new("i-0bad"), &tags("web")));
        assert!(!c.filters.admits(&InstanceId::new("i-02"), &TagMap::new()));
    }

    #[test]
    fn report_formats_default_to_all_and_unknown_ones_are_named() {
        assert_eq!(parse(MINIMAL).unwrap().reports.formats, Format::ALL);
        let c = parse(&format!(
            "{MINIMAL}reports:\n  formats: [html, csv, html]\n"
        ))
        .unwrap();
        assert_eq!(c.reports.formats, [Format::Html, Format::Csv]);
        let err = parse(&format!("{MINIMAL}reports:\n  formats: [csv, jsno]\n")).unwrap_err();
        assert_eq!(
            err,
            "c.yml: reports.formats[1]: unknown format \"jsno\" (did you mean `json`?); allowed: csv, json, html, xml"
        );
        let err = parse(&format!("{MINIMAL}reports:\n  formats: []\n")).unwrap_err();
        assert!(err.contains("reports.formats: is empty"), "{err}");
        let err = parse(&format!("{MINIMAL}reports:\n  fromats: [csv]\n")).unwrap_err();
        assert!(err.contains("did you mean `formats`?"), "{err}");
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../config/prepatch_config.example.yml");
        let c = parse(text).unwrap();
        assert_eq!(c.reports.formats, Format::ALL);
    }

    #[test]
    fn the_digest_is_of_the_parsed_text() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.sha256, sha256_hex(MINIMAL.as_bytes()));
        assert_eq!(c.sha256.len(), 64);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_teams_backup_tags_keep_to_what_ec2_takes_and_leave_prepatchs_keys() {
        let with = |tags: &str| {
            parse(&format!(
                "{MINIMAL}workflow: {{phases: {{ami_backup: {{tags: {tags}}}}}}}\n"
            ))
        };
        let c = with("{managed_by: CMS}").expect("loads");
        assert_eq!(
            c.phases.ami_backup.tags,
            vec![("managed_by".to_owned(), "CMS".to_owned())]
        );
        for (tags, why) in [
            ("{\"prepatch:run-id\": x}", "prepatch's own tag"),
            ("{Name: x}", "prepatch's own tag"),
            ("{\"aws:owner\": x}", "aws: are AWS's own"),
            ("{\"AWS:owner\": x}", "aws: are AWS's own"),
        ] {
            let err = with(tags).unwrap_err().to_string();
            assert!(
                err.contains("workflow.phases.ami_backup.tags.") && err.contains(why),
                "{tags}: {err}"
            );
        }
        let long = "v".repeat(257);
        assert!(
            with(&format!("{{k: {long}}}"))
                .unwrap_err()
                .to_string()
                .contains("256")
        );
    }

    #[test]
    fn environments_set_confirmation_and_retention() {
        let c = parse(&format!(
            "{MINIMAL}environments:\n  nonprod: {{confirm: true, retention_days: 3}}\n"
        ))
        .expect("loads");
        let lz = &c.landing_zones[0];
        assert!(lz.confirm, "nonprod asked for confirmation");
        assert_eq!(c.retention_days(&lz.name), 3);
        let c = parse(MINIMAL).expect("loads");
        assert!(!c.landing_zones[0].confirm, "only prod by default");
        assert_eq!(c.retention_days(&c.landing_zones[0].name), 7);
        let err = parse(&MINIMAL.replace("environment: nonprod", "environment: \"pre prod\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an environment name"), "{err}");
    }

    #[test]
    fn role_name_and_arn_together_is_an_error() {
        let err = parse(&format!(
            "{MINIMAL}    role_name: a\n    role_arn: arn:aws:iam::111111111111:role/b\n"
        ))
        .unwrap_err();
        assert!(
            err.contains("landing_zones[0].role_arn: give role_name or role_arn, not both"),
            "{err}"
        );
    }
}
