//! Benchmarks of the workflow against EC2's own rate limits, on the
//! simulated cloud (virtual time: hours of AWS waiting pass in moments).
//!
//! ```text
//! cargo run --release --example bench            # every table
//! cargo run --release --example bench -- calls   # API calls per instance
//! cargo run --release --example bench -- floor   # distance from the rate-limit floor
//! ```
//!
//! The scale figure (100,000 instances) is the demo itself, timed by
//! `/usr/bin/time -v`; BENCHMARKS.md gives the command.
//!
//! SimCloud applies EC2's documented token buckets per account-region and
//! answers `RequestLimitExceeded` when one is overdrawn, as AWS does; the
//! workflow runs through `Paced`, as in production.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use prepatch::cloud::limit::Paced;
use prepatch::cloud::sim::{FleetSpec, SimCloud};
use prepatch::cloud::{Api, Cloud};
use prepatch::config::Config;
use prepatch::model::{Phase, Plan, Run};
use prepatch::model::{Record, RunId};
use prepatch::workflow::{Clock, Confirmation, Options, Shutdown, Workflow, progress::Progress};

const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1"];

/// A config with `landing_zones` nonprod landing zones in `regions` regions each.
fn config(landing_zones: usize, regions: usize, extra: &str) -> Config {
    let mut text = format!("aws: {{regions: [{}]}}\n", REGIONS[..regions].join(", "));
    text.push_str("landing_zones:\n");
    for n in 0..landing_zones {
        text.push_str(&format!(
            "  - {{name: bench{n:02}-nonprod, account_id: \"{:012}\", environment: nonprod}}\n",
            100_000_000_000u64 + n as u64
        ));
    }
    text.push_str(extra);
    Config::parse(&text, Path::new("(bench)")).expect("bench config")
}

fn options(plans: &[(Phase, Plan)]) -> Options {
    Options {
        run_id: "bench-1".parse::<RunId>().expect("run id"),
        plans: plans.iter().cloned().collect(),
        dry_run: false,
        assume_yes: true,
        wait_backup: true,
        interactive: false,
        show_progress: false,
    }
}

struct Outcome {
    run: Run,
    cloud: Paced<SimCloud>,
}

/// Runs the workflow on a generated fleet, on a paused clock.
fn simulate(config: &Config, instances: usize, stopped_share: f64, options: &Options) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let sim = SimCloud::generate(&FleetSpec {
        landing_zones: config.landing_zones.clone(),
        instances,
        seed: 7,
        stopped_share,
        agent_problems: 0.0,
    });
    let cloud = Paced::new(sim);
    let run = rt.block_on(async {
        let wf = Workflow {
            events: Default::default(),
            cloud: &cloud,
            config,
            options,
            clock: Clock::start(DateTime::<Utc>::UNIX_EPOCH),
            shutdown: Shutdown::never(),
            progress: Progress::hidden(),
            witnesses: Default::default(),
        };
        let lzs: Vec<_> = config.landing_zones.iter().collect();
        let mut no_checkpoint = |_: &Run| {};
        let mut yes = |_: &str| Confirmation::Yes;
        wf.run(&lzs, &mut no_checkpoint, &mut yes)
            .await
            .expect("workflow")
    });
    Outcome { run, cloud }
}

fn calls() {
    println!("## 1. API calls per instance (full run: scan, backup, start, validation)\n");
    let fleets = [
        ("1,000 instances, 1 account-region", config(1, 1, ""), 1_000),
        (
            "10,000 instances, 20 account-regions",
            config(5, 4, ""),
            10_000,
        ),
    ];
    let outcomes: Vec<(&str, usize, BTreeMap<Api, u64>, bool)> = fleets
        .iter()
        .map(|(name, config, n)| {
            let o = simulate(config, *n, 0.2, &options(&[]));
            let ready = o
                .run
                .records()
                .all(|r| r.verdict.as_ref().is_some_and(|v| v.ready));
            let counts = o
                .cloud
                .api_calls()
                .snapshot()
                .into_iter()
                .map(|(api, c)| (api, c.calls))
                .collect();
            (*name, *n, counts, ready)
        })
        .collect();
    print!("| action |");
    for (name, ..) in &outcomes {
        print!(" {name}: calls | per instance |");
    }
    println!("\n|---|{}", "---:|---:|".repeat(outcomes.len()));
    let mut actions: Vec<Api> = outcomes
        .iter()
        .flat_map(|(_, _, c, _)| c.keys().copied())
        .collect();
    actions.sort();
    actions.dedup();
    let row = |label: &str, f: &dyn Fn(&BTreeMap<Api, u64>) -> u64| {
        print!("| {label} |");
        for (_, n, counts, _) in &outcomes {
            let c = f(counts);
            print!(" {c} | {:.4} |", c as f64 / *n as f64);
        }
        println!();
    };
    for api in &actions {
        row(api.name(), &|c| c.get(api).copied().unwrap_or(0));
    }
    row("**all but CreateImage**", &|c| {
        c.iter()
            .filter(|(a, _)| **a != Api::CreateImage)
            .map(|(_, n)| n)
            .sum()
    });
    for (name, _, _, ready) in &outcomes {
        println!("\n{name}: every instance READY: {ready}");
    }
    println!();
}

/// Seconds from the first to the last of some timestamps.
fn span(times: impl Iterator<Item = DateTime<Utc>>) -> f64 {
    let times: Vec<_> = times.collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => (*b - *a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    }
}

fn throttled_share(cloud: &Paced<SimCloud>) -> (u64, u64) {
    let calls = cloud.api_calls().snapshot();
    let all: u64 = calls.values().map(|c| c.calls).sum();
    let throttled: u64 = calls.values().map(|c| c.throttled).sum();
    (throttled, all)
}

/// One row of table 2: how long the calls that set `issued` took to go out,
/// in the slowest account-region and over all of them, against `floor`.
fn floor_row(
    what: &str,
    n: usize,
    floor: f64,
    o: &Outcome,
    issued: fn(&Record) -> Option<DateTime<Utc>>,
) {
    let targets = o.run.targets.len();
    let slowest = o
        .run
        .targets
        .iter()
        .map(|t| span(t.records.iter().filter_map(issued)))
        .fold(0.0, f64::max);
    let all_targets = span(o.run.records().filter_map(issued));
    let (throttled, all) = throttled_share(&o.cloud);
    println!(
        "| {what}, all issued | {n} | {targets} | {floor:.0} | {slowest:.1} | {all_targets:.1} | {:+.1}% | {throttled} of {all} ({:.2}%) |",
        (slowest / floor - 1.0) * 100.0,
        throttled as f64 * 100.0 / all as f64
    );
}

fn floor() {
    println!("## 2. Distance from the rate-limit floor\n");
    println!(
        "| what | N per account-region | account-regions | floor (s) | slowest account-region (s) | all account-regions (s) | over floor | throttled calls |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let skip = |phases: [Phase; 2]| options(&phases.map(|p| (p, Plan::Skip("bench".into()))));
    // Backups only: the CreateImage bucket (50, refilling 5/s).
    let n = 1_000usize;
    for (lzs, regions) in [(1, 1), (5, 4)] {
        let config = config(lzs, regions, "");
        let o = simulate(
            &config,
            n * lzs * regions,
            0.0,
            &skip([Phase::ServerStart, Phase::Validation]),
        );
        floor_row("CreateImage", n, (n as f64 - 50.0) / 5.0, &o, |r| {
            r.backup.as_ref()?.created_at
        });
    }
    // Starts only: StartInstances' resource bucket (1,000, refilling 2/s).
    let n = 2_000usize;
    for (lzs, regions) in [(1, 1), (5, 4)] {
        let config = config(
            lzs,
            regions,
            "workflow: {phases: {server_start: {require_backup: false}}}\n",
        );
        let o = simulate(
            &config,
            n * lzs * regions,
            1.0,
            &skip([Phase::AmiBackup, Phase::Validation]),
        );
        let started = o
            .run
            .records()
            .filter(|r| r.start.as_ref().is_some_and(|s| s.started_by_run))
            .count();
        assert_eq!(started, n * lzs * regions, "every instance started");
        floor_row("StartInstances", n, (n as f64 - 1000.0) / 2.0, &o, |r| {
            r.start.as_ref()?.started_at
        });
    }
    println!();
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match which.as_str() {
        "calls" => calls(),
        "floor" => floor(),
        "all" => {
            calls();
            floor();
        }
        other => {
            eprintln!("unknown benchmark {other:?}: use calls, floor or all");
            std::process::exit(2);
        }
    }
}
