//! Landing zones from AWS Organizations (`organizations:`): the accounts
//! discovery found (`cloud::aws` reads them), made landing zones by the
//! config's rules, and the same landing zones again from a run's record,
//! so that a resume, restore or rollback works on what the run worked on
//! even if the organization has changed since.
//!
//! An account becomes a landing zone when it is `ACTIVE`, not excluded, and
//! carries every `account_tags` tag. Its name, environment and regions come
//! from the rules (`tag:<key>`, `account-name`, or a fixed value); the role
//! is `aws.role_name` in it, as for every landing zone. A landing zone the
//! config lists itself under the same name and account is the config's; the
//! same name for another account is an error.

use serde::{Deserialize, Serialize};

use super::check::{Checker, check_landing_zone};
use super::raw::{RawAccountId, RawLandingZone};
use super::{Config, ConfigError, Rule};
use crate::model::OrgAccount;

/// A landing zone as a run records it, to be the same one later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedLandingZone {
    pub name: String,
    pub account_id: String,
    pub environment: String,
    pub regions: Vec<String>,
    pub origin: String,
}

/// What discovery made of the organization: the landing zones it added,
/// and the accounts it passed over, with why.
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    pub added: Vec<RecordedLandingZone>,
    pub skipped: Vec<String>,
}

/// An account's name as a landing-zone name: lowercase, every run of other
/// characters than letters, digits, `-` and `_` made one `-`.
fn name_of_account(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(64).collect()
}

impl Config {
    /// Adds the organization's accounts as landing zones by the config's
    /// rules. An account whose rule gives no usable value is an error that
    /// names the account and the rule.
    pub fn add_organization(&mut self, accounts: &[OrgAccount]) -> Result<Discovered, ConfigError> {
        let Some(org) = self.organizations.clone() else {
            return Ok(Discovered::default());
        };
        let source = self.source.clone();
        let err =
            |account: &OrgAccount, field: &str, rule: &Rule, why: String| ConfigError::Invalid {
                path: source.clone(),
                field: format!("organizations.{field}"),
                message: format!(
                    "account {} ({:?}): {field} by {rule}: {why}",
                    account.id,
                    crate::console::visible(&account.name)
                ),
            };
        let mut found = Discovered::default();
        for a in accounts {
            let skip = if a.state != "ACTIVE" {
                Some(format!("its state is {}", a.state))
            } else if a.id.parse().is_ok_and(|id| org.exclude.contains(&id)) {
                Some("excluded".to_owned())
            } else {
                org.account_tags
                    .iter()
                    .find(|(k, v)| a.tags.get(*k) != Some(*v))
                    .map(|(k, v)| format!("it is not tagged {k}={v}"))
            };
            if let Some(why) = skip {
                found.skipped.push(format!("{}: {why}", a.id));
                continue;
            }
            let name = match &org.name {
                Rule::AccountName => name_of_account(&a.name),
                rule => rule.value_of(a).map_err(|why| err(a, "name", rule, why))?,
            };
            if !super::valid_lz_name(&name) {
                return Err(err(
                    a,
                    "name",
                    &org.name,
                    format!(
                        "{:?} is not a landing zone name (letters, digits, '-', '_')",
                        crate::console::visible(&name)
                    ),
                ));
            }
            let environment = org
                .environment
                .value_of(a)
                .map_err(|why| err(a, "environment", &org.environment, why))?;
            let regions = match &org.regions {
                None => self.aws.regions.iter().map(|r| r.to_string()).collect(),
                Some(rule) => rule
                    .value_of(a)
                    .map_err(|why| err(a, "regions", rule, why))?
                    .split([',', ' '])
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
            };
            let recorded = RecordedLandingZone {
                name,
                account_id: a.id.clone(),
                environment,
                regions,
                origin: format!("organizations (account {})", a.id),
            };
            if self.add_recorded_one(&recorded)? {
                found.added.push(recorded);
            }
        }
        self.apply_environments();
        Ok(found)
    }

    /// Adds the landing zones a run recorded from the organization.
    pub fn add_recorded(&mut self, recorded: &[RecordedLandingZone]) -> Result<(), ConfigError> {
        for r in recorded {
            self.add_recorded_one(r)?;
        }
        self.apply_environments();
        Ok(())
    }

    /// One landing zone from the organization: checked as the config's
    /// own are; `false` when the config lists it itself.
    fn add_recorded_one(&mut self, r: &RecordedLandingZone) -> Result<bool, ConfigError> {
        if let Some(lz) = self.landing_zone(&r.name) {
            if lz.account_id.as_str() == r.account_id {
                return Ok(false);
            }
            return Err(ConfigError::Invalid {
                path: self.source.clone(),
                field: "organizations.name".into(),
                message: format!(
                    "account {} would be landing zone {}, which {} gives account {}: name them apart (a name tag, or exclude)",
                    r.account_id, r.name, lz.origin, lz.account_id
                ),
            });
        }
        let source = self.source.clone();
        let c = Checker { path: &source };
        let raw = RawLandingZone {
            name: r.name.clone(),
            account_id: RawAccountId::Text(r.account_id.clone()),
            environment: r.environment.clone(),
            regions: Some(r.regions.clone()),
            role_name: None,
            role_arn: None,
            enabled: Some(true),
            external_id: None,
            external_id_env: None,
        };
        let i = self.landing_zones.len();
        let mut lz = check_landing_zone(&c, i, raw, &self.aws).map_err(|e| match e {
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: source.clone(),
                field: "organizations".into(),
                message: format!("account {} ({}): {message}", r.account_id, r.name),
            },
            other => other,
        })?;
        lz.origin = r.origin.clone();
        self.landing_zones.push(lz);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_become_landing_zone_names() {
        assert_eq!(
            name_of_account("CMS NonProd (Sydney)"),
            "cms-nonprod-sydney"
        );
        assert_eq!(name_of_account("lz250prod"), "lz250prod");
        assert_eq!(name_of_account("  !!  "), "");
    }
}
