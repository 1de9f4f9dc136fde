//! The original tool's inventory files: landing zones kept per
//! environment in `inventory/nonprod_landing_zones.yml`,
//! `inventory/prod_landing_zones.yml` (and any other environment's
//! `<environment>_landing_zones.yml`), read as they are:
//!
//! ```yaml
//! landing_zones:
//!   - name: cmsnonprod
//!     account_id: 954976297051
//!     patch_enabled: true
//! ```
//!
//! The environment is the file's (`<environment>_landing_zones.yml`);
//! `patch_enabled: false` is a disabled landing zone; an account id written
//! as a YAML number must still have 12 digits (a shorter one lost its
//! leading zero: quote it). Landing zones from the config and from
//! inventory files merge; a name listed twice with the same account is one
//! landing zone, the stricter of the two (a warning names both places), and
//! with another account an error naming both places.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::check::{Checker, check_landing_zone};
use super::raw::{RawAccountId, RawLandingZone, parse_raw_as};
use super::{Config, ConfigError};
use crate::model::Environment;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    landing_zones: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    account_id: RawAccountId,
    #[serde(default = "yes")]
    patch_enabled: bool,
}

fn yes() -> bool {
    true
}

/// The environment an inventory file is for, by its name:
/// `prod_landing_zones.yml` is prod, `preprod_landing_zones.yaml` preprod.
fn environment_of(path: &Path) -> Result<Environment, ConfigError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".yml")
        .or_else(|| name.strip_suffix(".yaml"))
        .unwrap_or(&name);
    stem.strip_suffix("_landing_zones")
        .and_then(|env| env.parse().ok())
        .ok_or_else(|| ConfigError::Invalid {
            path: path.to_owned(),
            field: "(file name)".into(),
            message: "an inventory file is named for its environment: <environment>_landing_zones.yml, like nonprod_landing_zones.yml or preprod_landing_zones.yml".into(),
        })
}

/// The inventory files `paths` name: each file as it is, and in each
/// folder its `*_landing_zones.yml` (or `.yaml`) files, by name.
fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = Vec::new();
    for path in paths {
        let read_err = |source| ConfigError::Read {
            path: path.clone(),
            source,
        };
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_err)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.ends_with("_landing_zones.yml") || n.ends_with("_landing_zones.yaml")
                    })
                })
                .collect();
            if found.is_empty() {
                return Err(ConfigError::Invalid {
                    path: path.clone(),
                    field: "(folder)".into(),
                    message:
                        "holds no <environment>_landing_zones.yml (like nonprod_landing_zones.yml)"
                            .into(),
                });
            }
            found.sort();
            out.extend(found);
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            return Err(ConfigError::Read {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such inventory file or folder",
                ),
            });
        }
    }
    Ok(out)
}

impl Config {
    /// A landing zone listed a second time (`here`, after `first`): with
    /// the same account it is the same landing zone, listed under two
    /// environments (the original tool's own files list `lz250nonprod` in
    /// both `nonprod_` and `prod_landing_zones.yml`). It is kept once, as
    /// the stricter of the two: the environment that needs confirmation
    /// (else the first), enabled if either is. Another account under the
    /// same name is an error naming both places.
    fn merge_twice_listed(
        &mut self,
        second: super::LandingZone,
        first: &str,
        here: &str,
        file: &Path,
        i: usize,
    ) -> Result<(), ConfigError> {
        let needs_confirm = |env: &Environment| {
            self.environments
                .get(env)
                .map_or_else(|| env.is_prod(), |p| p.confirm)
        };
        let second_strict = needs_confirm(&second.environment);
        let Some(kept) = self
            .landing_zones
            .iter_mut()
            .find(|l| l.name == second.name)
        else {
            return Ok(());
        };
        if kept.account_id != second.account_id {
            return Err(ConfigError::Invalid {
                path: file.to_owned(),
                field: format!("landing_zones[{i}].name"),
                message: format!(
                    "landing zone {:?} is defined twice with different accounts: {} in {first} and {} in {here}; keep one",
                    second.name, kept.account_id, second.account_id
                ),
            });
        }
        let first_env = kept.environment.clone();
        if second_strict && !needs_confirm(&first_env) {
            kept.environment = second.environment.clone();
        }
        kept.enabled |= second.enabled;
        kept.origin = format!("{first} and {here}");
        tracing::warn!(
            "landing zone {} (account {}) is listed in {first} as {first_env} and in {here} as {}: one landing zone, treated as {}{}",
            second.name,
            second.account_id,
            second.environment,
            kept.environment,
            if needs_confirm(&kept.environment) {
                " (its changes need confirmation)"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// Adds the landing zones of the inventory files (or folders) at
    /// `paths`. A name the config or another file already defines is the
    /// same landing zone if its account is the same
    /// ([`Config::merge_twice_listed`]), else an error naming both places.
    pub fn add_inventory(&mut self, paths: &[PathBuf]) -> Result<(), ConfigError> {
        if paths.is_empty() {
            return Ok(());
        }
        // Where each name was defined, for the message when it comes again.
        let mut defined: BTreeMap<String, String> = self
            .landing_zones
            .iter()
            .enumerate()
            .map(|(i, lz)| {
                (
                    lz.name.clone(),
                    format!("{} (landing_zones[{i}])", self.source.display()),
                )
            })
            .collect();
        for file in files(paths)? {
            let environment = environment_of(&file)?;
            let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            let raw: RawInventory = parse_raw_as(&text, &file)?;
            let c = Checker { path: &file };
            for (i, entry) in raw.landing_zones.into_iter().enumerate() {
                let here = format!("{} (landing_zones[{i}])", file.display());
                let lz = RawLandingZone {
                    name: entry.name,
                    account_id: entry.account_id,
                    environment: environment.to_string(),
                    regions: None,
                    role_name: None,
                    role_arn: None,
                    enabled: Some(entry.patch_enabled),
                    external_id: None,
                    external_id_env: None,
                };
                let lz = check_landing_zone(&c, i, lz, &self.aws)?;
                match defined.get(&lz.name) {
                    None => {
                        defined.insert(lz.name.clone(), here);
                        self.landing_zones.push(lz);
                    }
                    Some(first) => {
                        let first = first.clone();
                        self.merge_twice_listed(lz, &first, &here, &file, i)?;
                    }
                }
            }
        }
        self.apply_environments();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The original tool's two files, exactly as it keeps them.
    const NONPROD: &str = "landing_zones:
  - name: cmsnonprod
    account_id: 954976297051
    patch_enabled: true
  - name: lz250nonprod
    account_id: 123456789012
    patch_enabled: false
";
    const PROD: &str = "landing_zones:
  - name: cmsprod
    account_id: 210987654321
    patch_enabled: true
";

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    fn config(text: &str, dir: &Path) -> Result<Config, ConfigError> {
        let path = dir.join("config.yml");
        std::fs::write(&path, text).expect("write");
        Config::load(&path)
    }

    #[test]
    fn the_original_files_read_as_they_are_and_merge_with_the_config() {
        let inv = folder(&[
            ("nonprod_landing_zones.yml", NONPROD),
            ("prod_landing_zones.yml", PROD),
        ]);
        let c = config(
            &format!(
                "aws: {{regions: [eu-west-1]}}
landing_zones:
  - {{name: extra, account_id: \"999999999999\", environment: nonprod}}
inventory: {}
",
                inv.path().display()
            ),
            inv.path(),
        )
        .expect("loads");
        let names: Vec<(&str, String, bool, String)> = c
            .landing_zones
            .iter()
            .map(|lz| {
                (
                    lz.name.as_str(),
                    lz.environment.to_string(),
                    lz.enabled,
                    lz.account_id.to_string(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("extra", "nonprod".into(), true, "999999999999".into()),
                ("cmsnonprod", "nonprod".into(), true, "954976297051".into()),
                (
                    "lz250nonprod",
                    "nonprod".into(),
                    false,
                    "123456789012".into()
                ),
                ("cmsprod", "prod".into(), true, "210987654321".into()),
            ]
        );
        let cms = c.landing_zone("cmsnonprod").expect("cmsnonprod");
        assert_eq!(cms.regions.len(), 1, "the config's regions");
        assert_eq!(cms.role_arn, "arn:aws:iam::954976297051:role/PrePatchRole");
    }

    #[test]
    fn a_relative_inventory_is_the_config_folders_and_a_file_can_be_named() {
        let inv = folder(&[("prod_landing_zones.yml", PROD)]);
        let c = config("inventory: [prod_landing_zones.yml]\n", inv.path()).expect("loads");
        assert_eq!(c.landing_zones.len(), 1);
        assert!(c.landing_zones[0].environment.is_prod());
    }

    #[test]
    fn a_short_numeric_account_id_says_to_quote_it() {
        let inv = folder(&[(
            "nonprod_landing_zones.yml",
            "landing_zones:\n  - {name: a, account_id: 12345678901, patch_enabled: true}\n",
        )]);
        let e = config("inventory: .\n", inv.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nonprod_landing_zones.yml")
                && e.contains("landing_zones[0].account_id")
                && e.contains("12345678901")
                && e.contains("quote it"),
            "{e}"
        );
    }

    #[test]
    fn a_name_defined_twice_names_both_places() {
        let inv = folder(&[
            ("nonprod_landing_zones.yml", NONPROD),
            (
                "prod_landing_zones.yml",
                "landing_zones:\n  - {name: cmsnonprod, account_id: 210987654321}\n",
            ),
        ]);
        let e = config("inventory: .\n", inv.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"cmsnonprod\" is defined twice")
                && e.contains("nonprod_landing_zones.yml (landing_zones[0])")
                && e.contains("prod_landing_zones.yml (landing_zones[0])"),
            "{e}"
        );
        let e = config(
            "landing_zones:\n  - {name: cmsnonprod, account_id: \"111111111111\", environment: nonprod}\ninventory: .\n",
            inv.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("config.yml (landing_zones[0])"), "{e}");
    }

    #[test]
    fn one_account_listed_under_two_environments_is_one_landing_zone_the_stricter() {
        // The original tool's own files list lz250nonprod in both, with the
        // same account (and disabled in one of them).
        let inv = folder(&[
            ("nonprod_landing_zones.yml", NONPROD),
            (
                "prod_landing_zones.yml",
                "landing_zones:\n  - {name: lz250nonprod, account_id: 123456789012, patch_enabled: true}\n",
            ),
        ]);
        let c = config("inventory: .\n", inv.path()).expect("loads");
        let lzs: Vec<_> = c
            .landing_zones
            .iter()
            .filter(|l| l.name == "lz250nonprod")
            .collect();
        assert_eq!(lzs.len(), 1, "one landing zone");
        assert!(
            lzs[0].environment.is_prod() && lzs[0].confirm,
            "{:?}",
            lzs[0]
        );
        assert!(lzs[0].enabled, "enabled in one of the files");
    }

    #[test]
    fn bad_files_and_folders_are_named_with_the_fix() {
        let inv = folder(&[("landing_zones.yml", PROD)]);
        let e = config("inventory: landing_zones.yml\n", inv.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("prod_landing_zones.yml"), "{e}");
        let empty = folder(&[]);
        let e = config("inventory: .\n", empty.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds no <environment>_landing_zones.yml"),
            "{e}"
        );
        let e = config("inventory: nowhere/\n", empty.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nowhere") && e.contains("no such inventory"),
            "{e}"
        );
        let typo = folder(&[(
            "prod_landing_zones.yml",
            "landing_zones:\n  - {name: a, account_id: 210987654321, patch_enable: true}\n",
        )]);
        let e = config("inventory: .\n", typo.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `patch_enabled`"), "{e}");
    }
}
