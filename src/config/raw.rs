//! The YAML's shape, as serde reads it (`Raw*`), and parse errors made
//! readable: the file, the field, a "did you mean".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

pub(super) fn parse_raw(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    parse_raw_as(text, path)
}

/// Any of the YAML shapes (the config, an inventory file), parsed with
/// readable errors.
pub(super) fn parse_raw_as<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    // Syntax first, on its own: serde reads lazily and would report a
    // broken document as a type error somewhere inside it.
    if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        let loc = e.location();
        return Err(ConfigError::Syntax {
            path: path.to_owned(),
            line: loc.as_ref().map_or(0, |l| l.line()),
            column: loc.as_ref().map_or(0, |l| l.column()),
            message: strip_location(&e.to_string()),
        });
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
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

/// serde_yaml_ng starts some messages with its own path (`aws: ...`); we
/// print the path ourselves.
pub(super) fn strip_path(message: &str) -> String {
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => rest.to_owned(),
        _ => message.to_owned(),
    }
}

/// serde_yaml_ng appends " at line L column C"; we print the location ourselves.
pub(super) fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Turns serde's "unknown field `regoins`, expected one of `regions`, ..."
/// into "unknown field `regoins` (did you mean `regions`?); allowed: ...".
pub(super) fn did_you_mean(message: &str) -> String {
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
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) aws: RawAws,
    #[serde(default)]
    pub(super) landing_zones: Vec<RawLandingZone>,
    #[serde(default)]
    pub(super) workflow: RawWorkflow,
    #[serde(default)]
    pub(super) filters: RawFilters,
    #[serde(default)]
    pub(super) reports: RawReports,
    /// The original tool's inventory files, or the folders holding them.
    #[serde(default)]
    pub(super) inventory: Option<RawPaths>,
    #[serde(default)]
    pub(super) notifications: Vec<RawNotification>,
    /// Per environment: whether changes need confirmation, how long
    /// backups live.
    #[serde(default)]
    pub(super) environments: BTreeMap<String, RawEnvironment>,
    /// Landing zones from AWS Organizations.
    pub(super) organizations: Option<RawOrganizations>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrganizations {
    pub(super) role_arn: Option<String>,
    #[serde(default)]
    pub(super) ous: Vec<String>,
    #[serde(default)]
    pub(super) account_tags: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) exclude: Vec<RawAccountId>,
    pub(super) name: Option<String>,
    pub(super) environment: Option<String>,
    pub(super) regions: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvironment {
    pub(super) confirm: Option<bool>,
    pub(super) retention_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotification {
    pub(super) name: Option<String>,
    pub(super) format: String,
    pub(super) url_env: String,
    pub(super) events: Option<Vec<String>>,
    pub(super) timeout: Option<u64>,
    pub(super) attempts: Option<u32>,
}

/// One path or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawPaths {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReports {
    pub(super) formats: Option<Vec<String>>,
    pub(super) journal: Option<PathBuf>,
    pub(super) group_readable: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub(super) regions: Option<Vec<String>>,
    pub(super) role_name: Option<String>,
    pub(super) restore_role_name: Option<String>,
    pub(super) session_duration: Option<u64>,
    pub(super) endpoint_url: Option<String>,
    pub(super) max_concurrency: Option<usize>,
}

/// Account ids may be written quoted or bare; bare ones lose leading zeros,
/// which the check then reports.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawAccountId {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLandingZone {
    pub(super) name: String,
    pub(super) account_id: RawAccountId,
    pub(super) environment: String,
    pub(super) regions: Option<Vec<String>>,
    pub(super) role_name: Option<String>,
    pub(super) role_arn: Option<String>,
    pub(super) enabled: Option<bool>,
    /// The `sts:ExternalId` the role's trust policy asks for, or the
    /// environment variable that holds it.
    pub(super) external_id: Option<String>,
    pub(super) external_id_env: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    #[serde(default)]
    pub(super) phases: RawPhases,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPhases {
    #[serde(default)]
    pub(super) scanner: RawScanner,
    #[serde(default)]
    pub(super) ami_backup: RawAmiBackup,
    #[serde(default)]
    pub(super) server_start: RawServerStart,
    #[serde(default)]
    pub(super) validation: RawValidation,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScanner {
    pub(super) enabled: Option<bool>,
    pub(super) timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAmiBackup {
    pub(super) enabled: Option<bool>,
    pub(super) retention_days: Option<u32>,
    pub(super) timeout: Option<u64>,
    pub(super) no_reboot: Option<bool>,
    pub(super) wait: Option<bool>,
    pub(super) deprecate_at_expiry: Option<bool>,
    pub(super) auto_scaling_members: Option<bool>,
    /// The team's own tags for every backup and its snapshots.
    pub(super) tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerStart {
    pub(super) enabled: Option<bool>,
    pub(super) wait_timeout: Option<u64>,
    pub(super) require_backup: Option<bool>,
    pub(super) auto_scaling_members: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidation {
    pub(super) enabled: Option<bool>,
    pub(super) health_checks: Option<bool>,
    pub(super) ssm_ping: Option<bool>,
    pub(super) timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFilters {
    #[serde(default)]
    pub(super) include_tags: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub(super) exclude_tags: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub(super) include_instance_ids: Vec<String>,
    #[serde(default)]
    pub(super) exclude_instance_ids: Vec<String>,
}

/// `PatchGroup: web` or `PatchGroup: [web, db]`; `~` (null) means any value.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
    Any(()),
}

// ---- checks ----
