//! The schedule recipes in docs/ are complete and current: every YAML file
//! parses, the systemd units have what systemd needs, and every prepatch
//! command line in them (and in docs/schedules.md) is accepted by
//! prepatch's own command-line parser.

use std::path::{Path, PathBuf};

use clap::Parser;
use prepatch::cli::Cli;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The prepatch command lines in `text`: from the word `prepatch` (or a
/// path ending in `/prepatch`) to the end of the line, before a shell's
/// `>`, `|`, `&&` or `2>`.
fn command_lines(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(start) = words
            .iter()
            .position(|w| *w == "prepatch" || w.ends_with("/prepatch"))
        else {
            continue;
        };
        // Prose and paths that only name the tool.
        let next = words.get(start + 1).copied().unwrap_or("");
        if !(next.starts_with('-')
            || ["demo", "restore", "rollback", "cleanup", "runs", "report"].contains(&next))
        {
            continue;
        }
        let mut args = vec!["prepatch".to_owned()];
        for w in &words[start + 1..] {
            if w.starts_with('>') || w.starts_with("2>") || *w == "|" || *w == "&&" || *w == ">>" {
                break;
            }
            args.push(w.trim_matches('`').to_owned());
        }
        out.push(args);
    }
    out
}

/// The lines inside a Markdown file's fenced code blocks.
fn fenced(text: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn every_yaml_recipe_parses_and_says_what_it_must() {
    let gha: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&docs().join("schedules/github-actions.yml"))).expect("YAML");
    assert!(gha["on"]["schedule"][0]["cron"].is_string(), "a schedule");
    assert_eq!(
        gha["permissions"]["id-token"].as_str(),
        Some("write"),
        "OIDC needs id-token: write"
    );
    let steps = gha["jobs"]["prepatch"]["steps"]
        .as_sequence()
        .expect("steps");
    assert!(
        steps.iter().any(|s| s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("aws-actions/configure-aws-credentials"))),
        "the role assumed through OIDC"
    );
    for s in steps {
        if let Some(uses) = s["uses"].as_str() {
            let pin = uses.rsplit_once('@').map_or("", |(_, p)| p);
            assert!(
                pin.len() == 40 && pin.bytes().all(|b| b.is_ascii_hexdigit()),
                "{uses}: pinned by commit, not by a tag that can move"
            );
        }
    }
    let harness: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&docs().join("schedules/harness-step.yml"))).expect("YAML");
    let rules = harness["pipeline"]["notificationRules"]
        .as_sequence()
        .expect("notification rules");
    let kinds: Vec<&str> = rules
        .iter()
        .filter_map(|r| r["notificationMethod"]["type"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["Slack", "Email"],
        "Slack on success, e-mail on failure"
    );
}

#[test]
fn the_systemd_units_are_complete() {
    let service = read(&docs().join("schedules/prepatch.service"));
    for needed in [
        "[Unit]",
        "[Service]",
        "Type=oneshot",
        "ExecStart=/usr/local/bin/prepatch ",
    ] {
        assert!(service.contains(needed), "prepatch.service lacks {needed}");
    }
    let timer = read(&docs().join("schedules/prepatch.timer"));
    for needed in [
        "[Timer]",
        "OnCalendar=",
        "Unit=prepatch.service",
        "[Install]",
    ] {
        assert!(timer.contains(needed), "prepatch.timer lacks {needed}");
    }
}

#[test]
fn every_command_line_in_the_recipes_is_accepted() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(docs().join("schedules"))
        .expect("docs/schedules")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.push(docs().join("schedules.md"));
    files.sort();
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        // In Markdown, the fenced code only: prose names commands too.
        let text = match file.extension().and_then(|e| e.to_str()) {
            Some("md") => fenced(&text),
            _ => text,
        };
        for args in command_lines(&text) {
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("{}: {:?} is refused:\n{e}", file.display(), args.join(" "));
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked} command lines found");
}
