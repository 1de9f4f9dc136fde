//! The checks that make a [`Config`](super::Config) of the YAML: each
//! field's range and form, one error naming the field and the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::model::{AccountId, Environment, Format, InstanceId, Region};

use super::raw::*;
use super::*;

pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
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

pub(super) fn check(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
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
        group_readable: raw.reports.group_readable.unwrap_or(false),
    };

    // Relative to the config file's folder, as a reader of it expects.
    let base = path.parent().unwrap_or(Path::new(""));
    let inventory = match raw.inventory {
        None => Vec::new(),
        Some(RawPaths::One(p)) => vec![p],
        Some(RawPaths::Many(ps)) => ps,
    }
    .into_iter()
    .map(|p| {
        if p.is_absolute() {
            p
        } else {
            lexical(&base.join(p))
        }
    })
    .collect();

    let notifications = raw
        .notifications
        .into_iter()
        .enumerate()
        .map(|(i, n)| check_notification(&c, i, n))
        .collect::<Result<_, _>>()?;
    let environments = check_environments(&c, raw.environments)?;
    let organizations = match raw.organizations {
        Some(o) => Some(check_organizations(&c, o, &aws)?),
        None => None,
    };

    let mut config = Config {
        source: path.to_owned(),
        aws,
        landing_zones,
        phases,
        filters,
        reports,
        inventory,
        notifications,
        environments,
        organizations,
        sha256: String::new(),
    };
    config.apply_environments();
    Ok(config)
}

/// `a/b/../c` as `a/c`, `./a` as `a`: a path as a person writes it, for
/// messages (no file system asked, so a symlinked folder is taken as
/// written).
fn lexical(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `organizations:`, checked: OU and root ids as Organizations writes them,
/// a role ARN in the regions' partition, account ids, and the rules.
fn check_organizations(
    c: &Checker<'_>,
    raw: RawOrganizations,
    aws: &Aws,
) -> Result<Organizations, ConfigError> {
    // "ou-" then 4-32 lowercase letters or digits, "-", 8-32 more; roots
    // "r-" then 4-32 (Organizations API reference, ParentId pattern).
    let id_ok = |id: &str| {
        let part = |s: &str, lo: usize| {
            (lo..=32).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match (id.strip_prefix("ou-"), id.strip_prefix("r-")) {
            (Some(rest), _) => rest
                .split_once('-')
                .is_some_and(|(a, b)| part(a, 4) && part(b, 8)),
            (_, Some(rest)) => part(rest, 4),
            _ => false,
        }
    };
    for (i, ou) in raw.ous.iter().enumerate() {
        if !id_ok(ou) {
            return Err(c.err(
                format!("organizations.ous[{i}]"),
                format!("{ou:?} is not an OU or root id (ou-ab12-cd34ef56, r-ab12)"),
            ));
        }
    }
    let partition = aws.regions[0].partition();
    if let Some(arn) = &raw.role_arn {
        let prefix = format!("arn:{partition}:iam::");
        if !arn.starts_with(&prefix) || !arn.contains(":role/") {
            return Err(c.err(
                "organizations.role_arn",
                format!("{arn:?} is not a role ARN in partition {partition} ({prefix}<account>:role/<name>)"),
            ));
        }
    }
    let mut exclude = BTreeSet::new();
    for (i, a) in raw.exclude.into_iter().enumerate() {
        let text = match a {
            RawAccountId::Text(s) => s,
            RawAccountId::Number(n) => n.to_string(),
        };
        let id: AccountId = text.parse().map_err(|()| {
            c.err(
                format!("organizations.exclude[{i}]"),
                format!("{text:?} is not a 12-digit account id (quote it)"),
            )
        })?;
        exclude.insert(id);
    }
    let Some(environment) = raw.environment else {
        return Err(c.err(
            "organizations.environment",
            "is required: an environment name for every account (nonprod), or tag:<key> to read it from an account tag",
        ));
    };
    Ok(Organizations {
        role_arn: raw.role_arn,
        ous: raw.ous,
        account_tags: raw.account_tags,
        exclude,
        name: Rule::parse(raw.name.as_deref().unwrap_or("account-name")),
        environment: Rule::parse(&environment),
        regions: raw.regions.as_deref().map(Rule::parse),
    })
}

/// `environments:`, checked: each name as a landing zone's environment is
/// written, each retention in the range `ami_backup.retention_days` has.
fn check_environments(
    c: &Checker<'_>,
    raw: BTreeMap<String, RawEnvironment>,
) -> Result<BTreeMap<Environment, EnvironmentPolicy>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, e) in raw {
        let at = |f: &str| format!("environments.{name}.{f}");
        let env: Environment = name
            .parse()
            .map_err(|why: String| c.err(format!("environments.{name}"), why))?;
        if let Some(days) = e.retention_days
            && !(MIN_RETENTION_DAYS..=3650).contains(&days)
        {
            return Err(c.err(
                at("retention_days"),
                format!("{days} must be between {MIN_RETENTION_DAYS} and 3650 days"),
            ));
        }
        out.insert(
            env.clone(),
            EnvironmentPolicy {
                confirm: e.confirm.unwrap_or_else(|| env.is_prod()),
                retention_days: e.retention_days,
            },
        );
    }
    Ok(out)
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
    if let Some(url) = &raw.endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(c.err(
            "aws.endpoint_url",
            format!("{url:?} is not an http:// or https:// URL"),
        ));
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
pub(super) fn check_landing_zone(
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
    let environment: Environment = lz
        .environment
        .parse()
        .map_err(|why: String| c.err(at("environment"), why))?;
    let regions = match lz.regions {
        Some(r) => c.regions(&at("regions"), r)?,
        None => aws.regions.clone(),
    };
    // One partition a landing zone: its ARNs are written in it.
    let partition = regions[0].partition();
    if let Some(other) = regions.iter().find(|r| r.partition() != partition) {
        return Err(c.err(
            at("regions"),
            format!(
                "mixes AWS partitions: {} is in {partition}, {other} in {}; an account lives in one partition, so list each partition's regions under a landing zone of its own",
                regions[0],
                other.partition()
            ),
        ));
    }
    let role_arn = match (lz.role_name, lz.role_arn) {
        (Some(_), Some(_)) => {
            return Err(c.err(at("role_arn"), "give role_name or role_arn, not both"));
        }
        (_, Some(arn)) => {
            let prefix = format!("arn:{partition}:iam::{account_id}:role/");
            if !arn.starts_with(&prefix) || arn.len() == prefix.len() {
                return Err(c.err(
                    at("role_arn"),
                    format!(
                        "{arn:?} is not a role of this landing zone: its regions are in partition {partition}, so the ARN reads {prefix}<name>"
                    ),
                ));
            }
            arn
        }
        (Some(name), None) => {
            check_role_name(c, &at("role_name"), &name)?;
            format!("arn:{partition}:iam::{account_id}:role/{name}")
        }
        (None, None) => format!("arn:{partition}:iam::{account_id}:role/{}", aws.role_name),
    };
    let restore_role_arn = match &aws.restore_role_name {
        Some(name) => format!("arn:{partition}:iam::{account_id}:role/{name}"),
        None => role_arn.clone(),
    };
    let external_id = external_id(c, &at, lz.external_id, lz.external_id_env)?;
    Ok(LandingZone {
        name: lz.name,
        account_id,
        // Set from `environments:` once every landing zone is read
        // (`Config::apply_environments`).
        confirm: environment.is_prod(),
        retention_days: 0,
        origin: format!("{} (landing_zones[{i}])", c.path.display()),
        environment,
        regions,
        role_arn,
        restore_role_arn,
        enabled: lz.enabled.unwrap_or(true),
        external_id,
    })
}

/// A landing zone's `external_id` or `external_id_env`, checked as STS
/// checks `ExternalId`: 2 to 1224 characters of `[\w+=,.@:/-]` (STS API
/// reference, `AssumeRole`).
fn external_id(
    c: &Checker<'_>,
    at: &dyn Fn(&str) -> String,
    value: Option<String>,
    var: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let (field, id) = match (value, var) {
        (Some(_), Some(_)) => {
            return Err(c.err(
                at("external_id_env"),
                "give external_id or external_id_env, not both",
            ));
        }
        (None, None) => return Ok(None),
        (Some(id), None) => ("external_id", id),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(id) if !id.is_empty() => ("external_id_env", id),
            _ => {
                return Err(c.err(
                    at("external_id_env"),
                    format!(
                        "the environment variable {var:?} is not set: export it with the role's external id"
                    ),
                ));
            }
        },
    };
    let ok = (2..=1224).contains(&id.len())
        && id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "_+=,.@:/-".contains(ch));
    if !ok {
        return Err(c.err(
            at(field),
            "is not an external id STS accepts: 2 to 1224 characters of letters, digits and _+=,.@:/-",
        ));
    }
    Ok(Some(id))
}

/// `ami_backup.tags`, checked as EC2 takes tags (EC2 user guide, "Tag your
/// Amazon EC2 resources", tag restrictions: a key of 1 to 128 characters, a
/// value of at most 256, no key beginning `aws:`, at most 50 tags on a
/// resource), and leaving prepatch's own keys (`prepatch:*`, `Name`) to it.
fn backup_tags(c: &Checker<'_>, raw: BTreeMap<String, String>) -> Result<Tags, ConfigError> {
    // prepatch writes 6 tags on an AMI, 5 on a snapshot.
    const ROOM: usize = 50 - 6;
    if raw.len() > ROOM {
        return Err(c.err(
            "workflow.phases.ami_backup.tags",
            format!(
                "{} tags: EC2 allows 50 on an AMI and prepatch writes 6, so give at most {ROOM}",
                raw.len()
            ),
        ));
    }
    for (key, value) in &raw {
        let at = format!("workflow.phases.ami_backup.tags.{key}");
        let lower = key.to_ascii_lowercase();
        let why = if key.trim().is_empty() || key.chars().count() > 128 {
            Some("a tag key has 1 to 128 characters".to_owned())
        } else if lower.starts_with("aws:") {
            Some("keys beginning aws: are AWS's own; EC2 refuses them".to_owned())
        } else if lower.starts_with("prepatch:") || key == "Name" {
            Some(format!(
                "{key} is prepatch's own tag on its backups; give the team's tags other keys"
            ))
        } else if value.chars().count() > 256 {
            Some("a tag value has at most 256 characters".to_owned())
        } else if key.chars().chain(value.chars()).any(char::is_control) {
            Some("tags hold no control characters".to_owned())
        } else {
            None
        };
        if let Some(why) = why {
            return Err(c.err(at, why));
        }
    }
    Ok(raw.into_iter().collect())
}

/// `workflow.phases`, checked.
fn check_phases(c: &Checker<'_>, p: RawPhases) -> Result<Phases, ConfigError> {
    let retention_days = p.ami_backup.retention_days.unwrap_or(7);
    if !(MIN_RETENTION_DAYS..=3650).contains(&retention_days) {
        return Err(c.err(
            "workflow.phases.ami_backup.retention_days",
            format!("{retention_days} must be between {MIN_RETENTION_DAYS} and 3650 days"),
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
            auto_scaling_members: p.ami_backup.auto_scaling_members.unwrap_or(true),
            tags: backup_tags(c, p.ami_backup.tags.unwrap_or_default())?,
        },
        server_start: ServerStart {
            enabled: p.server_start.enabled.unwrap_or(true),
            wait_timeout: c.seconds(
                "workflow.phases.server_start.wait_timeout",
                p.server_start.wait_timeout,
                600,
            )?,
            require_backup: p.server_start.require_backup.unwrap_or(true),
            auto_scaling_members: p.server_start.auto_scaling_members.unwrap_or(false),
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

/// `notifications[i]`, checked; its URL read from the environment variable
/// it names, now: an unset one stops the run before anything is done.
fn check_notification(
    c: &Checker<'_>,
    i: usize,
    n: RawNotification,
) -> Result<Notification, ConfigError> {
    let at = |f: &str| format!("notifications[{i}].{f}");
    let format = match n.format.as_str() {
        "slack" => NotifyFormat::Slack,
        "teams" => NotifyFormat::Teams,
        "json" => NotifyFormat::Json,
        other => {
            return Err(c.err(
                at("format"),
                format!("{other:?} is not a notification format: use slack, teams or json"),
            ));
        }
    };
    let var_ok = !n.url_env.is_empty()
        && n.url_env.len() <= 128
        && n.url_env
            .chars()
            .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
        && !n.url_env.starts_with(|ch: char| ch.is_ascii_digit());
    if !var_ok {
        return Err(c.err(
            at("url_env"),
            format!(
                "{:?} is not an environment variable name (like SLACK_WEBHOOK_URL): the URL itself never goes in the file",
                n.url_env
            ),
        ));
    }
    let url = match std::env::var(&n.url_env) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => {
            return Err(c.err(
                at("url_env"),
                format!(
                    "the environment variable {} is not set: export it with the webhook's URL, or remove this notification",
                    n.url_env
                ),
            ));
        }
    };
    if let Err(why) = webhook_url_allowed(&url) {
        return Err(c.err(at("url_env"), format!("{} {why}", n.url_env)));
    }
    let events = match n.events {
        None => NotifyEvent::ALL.into_iter().collect(),
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(k, e)| {
                NotifyEvent::ALL
                    .into_iter()
                    .find(|x| x.name() == e)
                    .ok_or_else(|| {
                        c.err(
                            format!("{}[{k}]", at("events")),
                            format!(
                                "{e:?} is not an event: use finished, failures, refused or interrupted"
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let timeout = c.seconds(&at("timeout"), n.timeout, 10)?;
    let attempts = n.attempts.unwrap_or(3);
    if !(1..=10).contains(&attempts) {
        return Err(c.err(at("attempts"), format!("{attempts}: give 1 to 10")));
    }
    Ok(Notification {
        name: n.name.unwrap_or_else(|| format!("{}-{i}", format.name())),
        format,
        url_env: n.url_env,
        url: Secret::new(url),
        events,
        timeout,
        attempts,
    })
}

/// A webhook URL goes over TLS: its path is a secret and the summary names
/// servers. Plain `http://` only to this machine (a local relay or a test).
/// The error is the rest of a sentence that starts with the variable's
/// name, and never holds the URL.
fn webhook_url_allowed(url: &str) -> Result<(), &'static str> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| "does not hold a URL (like https://hooks.slack.com/services/...)")?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(
            "holds a plain http:// URL: use https:// (plain http is allowed only to localhost or 127.0.0.1)",
        ),
        _ => Err("does not hold an https:// URL"),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::webhook_url_allowed;

    #[test]
    fn webhooks_go_over_tls_but_to_this_machine() {
        for ok in [
            "https://hooks.slack.com/services/T0/B0/x",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]:9/hook",
        ] {
            assert_eq!(webhook_url_allowed(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://hooks.slack.com/services/T0/B0/x",
            "http://127.0.0.1.evil.example/hook",
            "ftp://example.com/x",
            "hooks.slack.com/services",
            "https://",
        ] {
            assert!(webhook_url_allowed(bad).is_err(), "{bad}");
        }
    }
}
