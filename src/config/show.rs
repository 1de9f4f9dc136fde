//! `prepatch config show`: the effective configuration in the config's own
//! layout, every value with where it came from: the file and line that set
//! it, the inventory file a landing zone is listed in, or `default`. A team
//! sees what prepatch will do with its files before a run.
//!
//! Where a value was set is read from the file's text: block-style keys
//! and list items by their indentation, and a key written inside a
//! one-line `{...}` map by the line that holds it. What is not found there
//! is a default.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Config, LandingZone, Rule};

/// Each key path of a YAML text (`aws.regions`, `landing_zones[1]`,
/// `workflow.phases.ami_backup.tags`) with its line (1-based) and text.
struct Lines {
    at: BTreeMap<String, (usize, String)>,
}

impl Lines {
    fn of(text: &str) -> Lines {
        let mut at = BTreeMap::new();
        // (indent of the key, its path); list counters per list path.
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut items: BTreeMap<String, usize> = BTreeMap::new();
        for (n, raw) in text.lines().enumerate() {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let mut indent = raw.len() - trimmed.len();
            let mut content = trimmed;
            if let Some(rest) = content.strip_prefix("- ") {
                while stack.last().is_some_and(|(i, _)| *i >= indent) {
                    stack.pop();
                }
                let list = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
                let k = items.entry(list.clone()).or_insert(0);
                let item = format!("{list}[{k}]");
                *k += 1;
                at.insert(item.clone(), (n + 1, raw.to_owned()));
                // The item's own keys sit where its first key does.
                indent += 2;
                stack.push((indent - 1, item));
                content = rest.trim_start();
            }
            let Some((key, _)) = content.split_once(':') else {
                continue;
            };
            let key = key.trim().trim_matches('"').trim_matches('\'');
            if key.is_empty() || key.contains(['{', '[', ' ']) {
                continue;
            }
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let path = match stack.last() {
                Some((_, parent)) => format!("{parent}.{key}"),
                None => key.to_owned(),
            };
            at.insert(path.clone(), (n + 1, raw.to_owned()));
            stack.push((indent, path));
        }
        Lines { at }
    }

    /// Where `path` was set: its own line, or the line of an ancestor
    /// written on one line that names the key.
    fn line(&self, path: &str) -> Option<usize> {
        if let Some((n, _)) = self.at.get(path) {
            return Some(*n);
        }
        let leaf = path.rsplit(['.', '[']).next().unwrap_or(path);
        let mut p = path;
        while let Some(i) = p.rfind(['.', '[']) {
            p = &p[..i];
            if let Some((n, text)) = self.at.get(p) {
                return text.contains(&format!("{leaf}:")).then_some(*n);
            }
        }
        None
    }
}

/// The writer of the listing: `key: value  # where`.
struct Out<'a> {
    text: String,
    lines: Lines,
    file: &'a str,
}

impl Out<'_> {
    fn origin(&self, path: &str) -> String {
        match self.lines.line(path) {
            Some(n) => format!("{}:{n}", self.file),
            None => "default".into(),
        }
    }

    /// `key: value` under `parent` (a key path; empty at the top).
    fn value(&mut self, depth: usize, parent: &str, key: &str, value: impl std::fmt::Display) {
        let path = match parent {
            "" => key.to_owned(),
            p => format!("{p}.{key}"),
        };
        let origin = self.origin(&path);
        let _ = writeln!(
            self.text,
            "{:width$}{key}: {value}  # {origin}",
            "",
            width = depth * 2
        );
    }

    fn section(&mut self, depth: usize, key: &str) {
        let _ = writeln!(self.text, "{:width$}{key}:", "", width = depth * 2);
    }
}

fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn quoted(s: &str) -> String {
    format!("{:?}", crate::console::visible(s))
}

impl Config {
    /// The effective configuration, in the config's layout, each value
    /// with where it came from. `text` is the config file's own text.
    pub fn show(&self, text: &str) -> String {
        let file = self.source.display().to_string();
        let mut o = Out {
            text: format!("# {file} (sha256 {})\n", self.sha256),
            lines: Lines::of(text),
            file: &file,
        };
        let a = &self.aws;
        o.section(0, "aws");
        o.value(1, "aws", "regions", list(&a.regions));
        o.value(1, "aws", "role_name", &a.role_name);
        if let Some(r) = &a.restore_role_name {
            o.value(1, "aws", "restore_role_name", r);
        }
        o.value(1, "aws", "session_duration", a.session_duration.as_secs());
        if let Some(u) = &a.endpoint_url {
            o.value(1, "aws", "endpoint_url", u);
        }
        o.value(1, "aws", "max_concurrency", a.max_concurrency);

        o.section(0, "landing_zones");
        for (i, lz) in self.landing_zones.iter().enumerate() {
            landing_zone(&mut o, i, lz, &self.source.display().to_string());
        }

        if !self.environments.is_empty() {
            o.section(0, "environments");
            for (env, p) in &self.environments {
                o.section(1, env.as_str());
                let at = format!("environments.{env}");
                o.value(2, &at, "confirm", p.confirm);
                if let Some(d) = p.retention_days {
                    o.value(2, &at, "retention_days", d);
                }
            }
        }
        if let Some(org) = &self.organizations {
            o.section(0, "organizations");
            if let Some(r) = &org.role_arn {
                o.value(1, "organizations", "role_arn", r);
            }
            o.value(1, "organizations", "ous", list(&org.ous));
            let tags: Vec<String> = org
                .account_tags
                .iter()
                .map(|(k, v)| format!("{k}: {}", quoted(v)))
                .collect();
            o.value(
                1,
                "organizations",
                "account_tags",
                format!("{{{}}}", tags.join(", ")),
            );
            o.value(
                1,
                "organizations",
                "exclude",
                list(org.exclude.iter().map(|a| quoted(a.as_str()))),
            );
            o.value(1, "organizations", "name", &org.name);
            o.value(1, "organizations", "environment", &org.environment);
            let regions = org
                .regions
                .clone()
                .unwrap_or(Rule::Fixed("aws.regions".into()));
            o.value(1, "organizations", "regions", regions);
        }

        let p = &self.phases;
        let ph = "workflow.phases";
        let [sc, ab, ss, va] =
            ["scanner", "ami_backup", "server_start", "validation"].map(|p| format!("{ph}.{p}"));
        o.section(0, "workflow");
        o.section(1, "phases");
        o.section(2, "scanner");
        o.value(3, &sc, "enabled", p.scanner.enabled);
        o.value(3, &sc, "timeout", p.scanner.timeout.as_secs());
        let b = &p.ami_backup;
        o.section(2, "ami_backup");
        o.value(3, &ab, "enabled", b.enabled);
        o.value(3, &ab, "retention_days", b.retention_days);
        o.value(3, &ab, "timeout", b.timeout.as_secs());
        o.value(3, &ab, "no_reboot", b.no_reboot);
        o.value(3, &ab, "wait", b.wait);
        o.value(3, &ab, "deprecate_at_expiry", b.deprecate_at_expiry);
        o.value(3, &ab, "auto_scaling_members", b.auto_scaling_members);
        let tags: Vec<String> = b
            .tags
            .iter()
            .map(|(k, v)| format!("{k}: {}", quoted(v)))
            .collect();
        o.value(3, &ab, "tags", format!("{{{}}}", tags.join(", ")));
        let s = &p.server_start;
        o.section(2, "server_start");
        o.value(3, &ss, "enabled", s.enabled);
        o.value(3, &ss, "wait_timeout", s.wait_timeout.as_secs());
        o.value(3, &ss, "require_backup", s.require_backup);
        o.value(3, &ss, "auto_scaling_members", s.auto_scaling_members);
        let v = &p.validation;
        o.section(2, "validation");
        o.value(3, &va, "enabled", v.enabled);
        o.value(3, &va, "health_checks", v.health_checks);
        o.value(3, &va, "ssm_ping", v.ssm_ping);
        o.value(3, &va, "timeout", v.timeout.as_secs());

        let f = &self.filters;
        o.section(0, "filters");
        let tagset = |m: &BTreeMap<String, std::collections::BTreeSet<String>>| {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, vs)| match vs.is_empty() {
                    true => format!("{k}: ~"),
                    false => format!("{k}: {}", list(vs.iter().map(|v| quoted(v)))),
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        };
        o.value(1, "filters", "include_tags", tagset(&f.include_tags));
        o.value(1, "filters", "exclude_tags", tagset(&f.exclude_tags));
        o.value(
            1,
            "filters",
            "include_instance_ids",
            list(&f.include_instance_ids),
        );
        o.value(
            1,
            "filters",
            "exclude_instance_ids",
            list(&f.exclude_instance_ids),
        );

        let r = &self.reports;
        o.section(0, "reports");
        o.value(
            1,
            "reports",
            "formats",
            list(r.formats.iter().map(|f| f.name())),
        );
        if let Some(j) = &r.journal {
            o.value(1, "reports", "journal", j.display());
        }
        o.value(1, "reports", "group_readable", r.group_readable);
        if !self.inventory.is_empty() {
            o.value(
                0,
                "",
                "inventory",
                list(self.inventory.iter().map(|p| p.display())),
            );
        }
        if !self.notifications.is_empty() {
            o.section(0, "notifications");
            for (i, n) in self.notifications.iter().enumerate() {
                let at = format!("notifications[{i}]");
                let _ = writeln!(
                    o.text,
                    "  - name: {}  # {}",
                    n.name,
                    o.origin(&format!("{at}.name"))
                );
                o.value(2, &at, "format", n.format.name());
                o.value(2, &at, "url_env", &n.url_env);
                o.value(2, &at, "events", list(n.events.iter().map(|e| e.name())));
                o.value(2, &at, "timeout", n.timeout.as_secs());
                o.value(2, &at, "attempts", n.attempts);
            }
        }
        o.text
    }
}

fn landing_zone(o: &mut Out<'_>, i: usize, lz: &LandingZone, config_file: &str) {
    // A landing zone of an inventory file (or of the organization) says so
    // once, on its name.
    let from_config = lz.origin.starts_with(&format!("{config_file} ("));
    let at = format!("landing_zones[{i}]");
    let name_from = match from_config {
        true => o.origin(&format!("{at}.name")),
        false => lz.origin.clone(),
    };
    let _ = writeln!(o.text, "  - name: {}  # {name_from}", lz.name);
    let field = |o: &mut Out<'_>, key: &str, value: String| {
        let from = match from_config {
            true => format!("  # {}", o.origin(&format!("{at}.{key}"))),
            false => String::new(),
        };
        let _ = writeln!(o.text, "    {key}: {value}{from}");
    };
    field(o, "account_id", quoted(lz.account_id.as_str()));
    field(o, "environment", lz.environment.to_string());
    field(o, "regions", list(&lz.regions));
    field(o, "role_arn", lz.role_arn.clone());
    field(o, "enabled", lz.enabled.to_string());
    let _ = writeln!(
        o.text,
        "    # changes need confirmation: {}; backups kept {} days",
        if lz.confirm { "yes" } else { "no" },
        lz.retention_days
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_indentation_list_items_and_one_line_maps() {
        let text = "aws:
  regions: [us-east-1]
  # a comment
landing_zones:
  - name: a
    account_id: \"111111111111\"
  - {name: b, account_id: \"222222222222\", environment: prod}
workflow:
  phases:
    ami_backup:
      retention_days: 3
";
        let l = Lines::of(text);
        assert_eq!(l.line("aws.regions"), Some(2));
        assert_eq!(l.line("aws.role_name"), None, "a default");
        assert_eq!(l.line("landing_zones[0].name"), Some(5));
        assert_eq!(l.line("landing_zones[0].account_id"), Some(6));
        assert_eq!(l.line("landing_zones[1].environment"), Some(7));
        assert_eq!(l.line("landing_zones[1].regions"), None);
        assert_eq!(
            l.line("workflow.phases.ami_backup.retention_days"),
            Some(11)
        );
        assert_eq!(l.line("workflow.phases.ami_backup.timeout"), None);
    }
}
