//! The YAML configuration: parsed into `Raw*` types (serde), then checked
//! once into [`Config`]. Nothing after this module re-checks the config.
//!
//! Errors name the file, the field path and the bad value, and say what is
//! allowed: `landing_zones[1].account_id: "12345" is not a 12-digit account id`.

use crate::model::TagMap;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    /// SHA-256 of the exact text that was parsed, lowercase hex, for the
    /// reports: which config a run used.
    pub sha256: String,
}

/// Which report files a run writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reports {
    /// In the order given, without repeats. Default: all of them.
    pub formats: Vec<Format>,
    /// The run journal (SQLite). Default: `<output-dir>/prepatch.db`.
    pub journal: Option<PathBuf>,
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
    pub regions: Vec<Region>,
    /// The role to assume in the account.
    pub role_arn: String,
    /// The role `restore` and `cleanup` assume in this account: the
    /// `aws.restore_role_name` role, else the run's.
    pub restore_role_arn: String,
    pub enabled: bool,
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
}

#[derive(Clone, Debug)]
pub struct ServerStart {
    pub enabled: bool,
    pub wait_timeout: Duration,
    /// Start an instance only once its AMI exists (the default).
    pub require_backup: bool,
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
        Config::parse(&text, path)
    }

    /// Checks YAML text; `path` is used only in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = parse_raw(text, path)?;
        let mut config = check(raw, path)?;
        config.sha256 = sha256_hex(text.as_bytes());
        Ok(config)
    }

    /// The landing zone with this name.
    pub fn landing_zone(&self, name: &str) -> Option<&LandingZone> {
        self.landing_zones.iter().find(|lz| lz.name == name)
    }
}

fn parse_raw(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    // Syntax first, on its own: serde reads lazily and would report a
    // broken document as a type error somewhere inside it.
    if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        let loc = e.location();
        return Err(ConfigError::Syntax {
            path: path.to_owned(),
            line: loc.as_ref().map_or(0, |l| l.line()),
            column: loc.as_ref().map_or(0, |l| l.column()),
            message: strip_location(&e.to_string()),
        });
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let message = did_you_mean(&strip_path(&strip_location(&inner.to_string())));
        match inner.location() {
            // A syntax error has no field path to speak of.
            Some(loc) if field == "." || field.is_empty() => ConfigError::Syntax {
                path: path.to_owned(),
                line: loc.line(),
                column: loc.column(),
                message: strip_location(&message),
            },
            loc => ConfigError::Invalid {
                path: path.to_owned(),
                field: match loc {
                    Some(loc) => format!("{field} (line {})", loc.line()),
                    None => field,
                },
                message: strip_location(&message),
            },
        }
    })
}

/// serde_yaml starts some messages with its own path (`aws: ...`); we
/// print the path ourselves.
fn strip_path(message: &str) -> String {
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => rest.to_owned(),
        _ => message.to_owned(),
    }
}

/// serde_yaml appends " at line L column C"; we print the location ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Turns serde's "unknown field `regoins`, expected one of `regions`, ..."
/// into "unknown field `regoins` (did you mean `regions`?); allowed: ...".
fn did_you_mean(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field ") else {
        return message.to_owned();
    };
    let names: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let Some((unknown, allowed)) = names.split_first() else {
        return message.to_owned();
    };
    let best = allowed
        .iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let allowed = allowed.join(", ");
    match best {
        Some((_, c)) => {
            format!("unknown key `{unknown}` (did you mean `{c}`?); allowed: {allowed}")
        }
        None => format!("unknown key `{unknown}`; allowed: {allowed}"),
    }
}

// ---- raw shapes, exactly as written in YAML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    aws: RawAws,
    #[serde(default)]
    landing_zones: Vec<RawLandingZone>,
    #[serde(default)]
    workflow: RawWorkflow,
    #[serde(default)]
    filters: RawFilters,
    #[serde(default)]
    reports: RawReports,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReports {
    formats: Option<Vec<String>>,
    journal: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAws {
    regions: Option<Vec<String>>,
    role_name: Option<String>,
    restore_role_name: Option<String>,
    session_duration: Option<u64>,
    endpoint_url: Option<String>,
    max_concurrency: Option<usize>,
}

/// Account ids may be written quoted or bare; bare ones lose leading zeros,
/// which the check then reports.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAccountId {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLandingZone {
    name: String,
    account_id: RawAccountId,
    environment: String,
    regions: Option<Vec<String>>,
    role_name: Option<String>,
    role_arn: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    #[serde(default)]
    phases: RawPhases,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPhases {
    #[serde(default)]
    scanner: RawScanner,
    #[serde(default)]
    ami_backup: RawAmiBackup,
    #[serde(default)]
    server_start: RawServerStart,
    #[serde(default)]
    validation: RawValidation,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScanner {
    enabled: Option<bool>,
    timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAmiBackup {
    enabled: Option<bool>,
    retention_days: Option<u32>,
    timeout: Option<u64>,
    no_reboot: Option<bool>,
    wait: Option<bool>,
    deprecate_at_expiry: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServerStart {
    enabled: Option<bool>,
    wait_timeout: Option<u64>,
    require_backup: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    enabled: Option<bool>,
    health_checks: Option<bool>,
    ssm_ping: Option<bool>,
    timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFilters {
    #[serde(default)]
    include_tags: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    exclude_tags: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    include_instance_ids: Vec<String>,
    #[serde(default)]
    exclude_instance_ids: Vec<String>,
}

/// `PatchGroup: web` or `PatchGroup: [web, db]`; `~` (null) means any value.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
    Any(()),
}

// ---- checks ----

pub const DEFAULT_ROLE_NAME: &str = "PrePatchRole";
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn regions(&self, field: &str, raw: Vec<String>) -> Result<Vec<Region>, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                field,
                "is empty: list at least one region, e.g. [us-east-1]",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, r) in raw.into_iter().enumerate() {
            let region: Region = r.parse().map_err(|()| {
                self.err(
                    format!("{field}[{i}]"),
                    format!("{r:?} is not an AWS region name (like us-east-1 or eu-west-2)"),
                )
            })?;
            if seen.insert(region.clone()) {
                out.push(region);
            }
        }
        Ok(out)
    }

    fn seconds(
        &self,
        field: &str,
        value: Option<u64>,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        match value.unwrap_or(default) {
            0 => Err(self.err(field, "0 is not a timeout: give seconds, at least 1")),
            s if s > 7 * 24 * 3600 => {
                Err(self.err(field, format!("{s} s is more than a week: give seconds")))
            }
            s => Ok(Duration::from_secs(s)),
        }
    }
}

fn check(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    let c = Checker { path };
    let aws = check_aws(&c, raw.aws)?;
    let mut landing_zones = Vec::new();
    let mut names = BTreeSet::new();
    for (i, lz) in raw.landing_zones.into_iter().enumerate() {
        let at = |f: &str| format!("landing_zones[{i}].{f}");
        if !names.insert(lz.name.clone()) {
            return Err(c.err(
                at("name"),
                format!(
                    "{:?} is listed twice: landing zone names must be unique",
                    lz.name
                ),
            ));
        }
        landing_zones.push(check_landing_zone(&c, i, lz, &aws)?);
    }

    let phases = check_phases(&c, raw.workflow.phases)?;
    let filters = check_filters(&c, raw.filters)?;
    let reports = Reports {
        formats: match raw.reports.formats {
            None => Format::ALL.to_vec(),
            Some(names) => formats(&c, "reports.formats", &names)?,
        },
        journal: raw.reports.journal,
    };

    Ok(Config {
        source: path.to_owned(),
        aws,
        landing_zones,
        phases,
        filters,
        reports,
        sha256: String::new(),
    })
}

/// `aws:`, checked.
fn check_aws(c: &Checker<'_>, raw: RawAws) -> Result<Aws, ConfigError> {
    let regions = match raw.regions {
        Some(r) => c.regions("aws.regions", r)?,
        None => vec![Region::from_trusted("us-east-1")],
    };
    let role_name = raw
        .role_name
        .unwrap_or_else(|| DEFAULT_ROLE_NAME.to_owned());
    check_role_name(c, "aws.role_name", &role_name)?;
    if let Some(name) = &raw.restore_role_name {
        check_role_name(c, "aws.restore_role_name", name)?;
    }
    let session_duration = raw.session_duration.unwrap_or(3600);
    if !(900..=43_200).contains(&session_duration) {
        return Err(c.err(
            "aws.session_duration",
            format!("{session_duration} is outside what STS allows: 900 to 43200 seconds"),
        ));
    }
    let max_concurrency = raw.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
    if !(1..=256).contains(&max_concurrency) {
        return Err(c.err(
            "aws.max_concurrency",
            format!("{max_concurrency} must be between 1 and 256"),
        ));
    }
    if let Some(url) = &raw.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(c.err(
                "aws.endpoint_url",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
    }
    Ok(Aws {
        regions,
        role_name,
        restore_role_name: raw.restore_role_name,
        session_duration: Duration::from_secs(session_duration),
        endpoint_url: raw.endpoint_url,
        max_concurrency,
    })
}

/// `landing_zones[i]`, checked; its role from the `aws:` defaults unless
/// it names its own.
fn check_landing_zone(
    c: &Checker<'_>,
    i: usize,
    lz: RawLandingZone,
    aws: &Aws,
) -> Result<LandingZone, ConfigError> {
    let at = |f: &str| format!("landing_zones[{i}].{f}");
    if !valid_lz_name(&lz.name) {
        return Err(c.err(
            at("name"),
            format!(
                "{:?} is not a landing zone name: use letters, digits, '-' and '_' (at most 64)",
                lz.name
            ),
        ));
    }
    let account_text = match lz.account_id {
        RawAccountId::Text(s) => format!("{s:?}"),
        RawAccountId::Number(n) => n.to_string(),
    };
    let account_id: AccountId = account_text.trim_matches('"').parse().map_err(|()| {
        c.err(
            at("account_id"),
            format!(
                "{account_text} is not a 12-digit account id (quote it in YAML so leading zeros survive: \"012345678901\")"
            ),
        )
    })?;
    let environment: Environment = lz.environment.parse().map_err(|()| {
        c.err(
            at("environment"),
            format!(
                "{:?} is not an environment: use nonprod or prod",
                lz.environment
            ),
        )
    })?;
    let regions = match lz.regions {
        Some(r) => c.regions(&at("regions"), r)?,
        None => aws.regions.clone(),
    };
    let role_arn = match (lz.role_name, lz.role_arn) {
        (Some(_), Some(_)) => {
            return Err(c.err(at("role_arn"), "give role_name or role_arn, not both"));
        }
        (_, Some(arn)) => {
            if !arn.starts_with("arn:aws") || !arn.contains(":role/") {
                return Err(c.err(
                    at("role_arn"),
                    format!("{arn:?} is not a role ARN (arn:aws:iam::<account>:role/<name>)"),
                ));
            }
            arn
        }
        (Some(name), None) => {
            check_role_name(c, &at("role_name"), &name)?;
            format!("arn:aws:iam::{account_id}:role/{name}")
        }
        (None, None) => format!("arn:aws:iam::{account_id}:role/{}", aws.role_name),
    };
    let restore_role_arn = match &aws.restore_role_name {
        Some(name) => format!("arn:aws:iam::{account_id}:role/{name}"),
        None => role_arn.clone(),
    };
    Ok(LandingZone {
        name: lz.name,
        account_id,
        environment,
        regions,
        role_arn,
        restore_role_arn,
        enabled: lz.enabled.unwrap_or(true),
    })
}

/// `workflow.phases`, checked.
fn check_phases(c: &Checker<'_>, p: RawPhases) -> Result<Phases, ConfigError> {
    let retention_days = p.ami_backup.retention_days.unwrap_or(7);
    if !(1..=3650).contains(&retention_days) {
        return Err(c.err(
            "workflow.phases.ami_backup.retention_days",
            format!("{retention_days} must be between 1 and 3650 days"),
        ));
    }
    Ok(Phases {
        scanner: Scanner {
            enabled: p.scanner.enabled.unwrap_or(true),
            timeout: c.seconds("workflow.phases.scanner.timeout", p.scanner.timeout, 300)?,
        },
        ami_backup: AmiBackup {
            enabled: p.ami_backup.enabled.unwrap_or(true),
            retention_days,
            timeout: c.seconds(
                "workflow.phases.ami_backup.timeout",
                p.ami_backup.timeout,
                1800,
            )?,
            no_reboot: p.ami_backup.no_reboot.unwrap_or(true),
            wait: p.ami_backup.wait.unwrap_or(true),
            deprecate_at_expiry: p.ami_backup.deprecate_at_expiry.unwrap_or(false),
        },
        server_start: ServerStart {
            enabled: p.server_start.enabled.unwrap_or(true),
            wait_timeout: c.seconds(
                "workflow.phases.server_start.wait_timeout",
                p.server_start.wait_timeout,
                600,
            )?,
            require_backup: p.server_start.require_backup.unwrap_or(true),
        },
        validation: Validation {
            enabled: p.validation.enabled.unwrap_or(true),
            health_checks: p.validation.health_checks.unwrap_or(true),
            ssm_ping: p.validation.ssm_ping.unwrap_or(true),
            timeout: c.seconds(
                "workflow.phases.validation.timeout",
                p.validation.timeout,
                600,
            )?,
        },
    })
}

/// `filters:`, checked.
fn check_filters(c: &Checker<'_>, raw: RawFilters) -> Result<Filters, ConfigError> {
    let tag_sets = |field: &str, raw: BTreeMap<String, OneOrMany>| {
        raw.into_iter()
            .map(|(k, v)| {
                if k.is_empty() {
                    return Err(c.err(field, "a tag key is empty"));
                }
                let values = match v {
                    OneOrMany::One(s) => BTreeSet::from([s]),
                    OneOrMany::Many(v) => v.into_iter().collect(),
                    OneOrMany::Any(()) => BTreeSet::new(),
                };
                Ok((k, values))
            })
            .collect::<Result<BTreeMap<_, _>, ConfigError>>()
    };
    let ids = |field: &str, raw: Vec<String>| {
        raw.into_iter()
            .enumerate()
            .map(|(i, id)| {
                if id.starts_with("i-")
                    && id.len() > 2
                    && id[2..].bytes().all(|b| b.is_ascii_hexdigit())
                {
                    Ok(InstanceId::new(id))
                } else {
                    Err(c.err(
                        format!("{field}[{i}]"),
                        format!("{id:?} is not an instance id (i-0123456789abcdef0)"),
                    ))
                }
            })
            .collect::<Result<BTreeSet<_>, ConfigError>>()
    };
    Ok(Filters {
        include_tags: tag_sets("filters.include_tags", raw.include_tags)?,
        exclude_tags: tag_sets("filters.exclude_tags", raw.exclude_tags)?,
        include_instance_ids: ids("filters.include_instance_ids", raw.include_instance_ids)?,
        exclude_instance_ids: ids("filters.exclude_instance_ids", raw.exclude_instance_ids)?,
    })
}

/// `[csv, json, html, xml]`, checked: known names, at least one.
fn formats(c: &Checker<'_>, field: &str, names: &[String]) -> Result<Vec<Format>, ConfigError> {
    let allowed = Format::ALL.map(Format::name).join(", ");
    if names.is_empty() {
        return Err(c.err(field, format!("is empty: list at least one of {allowed}")));
    }
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Ok(f) = name.trim().to_ascii_lowercase().parse::<Format>() else {
            let best = Format::ALL
                .map(Format::name)
                .into_iter()
                .map(|f| (strsim::jaro_winkler(&name.to_ascii_lowercase(), f), f))
                .filter(|(score, _)| *score > 0.7)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = match best {
                Some((_, f)) => format!(" (did you mean `{f}`?)"),
                None => String::new(),
            };
            return Err(c.err(
                format!("{field}[{i}]"),
                format!("unknown format {name:?}{hint}; allowed: {allowed}"),
            ));
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_role_name(c: &Checker<'_>, field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(c.err(
            field,
            format!("{name:?} is not an IAM role name (letters, digits and +=,.@_-/ only)"),
        ))
    }
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
        let text = include_str!("../config/prepatch_config.example.yml");
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
