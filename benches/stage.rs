//! Wall time of a full run on the test stage (tests/support/stage.py):
//! moto behind a middleware that behaves like AWS, with latency on every
//! request, new AMIs and started instances `pending` for a while, and
//! throttling. The real binary, the real SDK, over HTTP.
//!
//! `cargo bench --bench stage` prints the figures BENCHMARKS.md gives:
//! 3 accounts x 2 regions x 50 instances (90 stopped), requests taking
//! 20-60 ms, AMIs and starts pending 3 s; calm, then with 30% of requests
//! throttled. Under `cargo test` the same code runs once on a small fleet
//! as a smoke test (it asserts the run succeeds, never a time).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use serde_json::json;
use support::*;

/// The stage's pending windows, seconds.
const PENDING: f64 = 3.0;
/// The stage's latency range, ms.
const LATENCY_MS: [f64; 2] = [20.0, 60.0];
/// `aws.max_concurrency`'s default.
const CONCURRENCY: f64 = 16.0;

struct Fleet {
    accounts: usize,
    regions: &'static [&'static str],
    per_target: i32,
    stopped_per_target: usize,
}

struct Figures {
    wall: f64,
    floor: f64,
    instances: usize,
    /// Answered requests besides `CreateImage`.
    others: usize,
    throttled_by_stage: usize,
    throttled_counted: u64,
    ready: usize,
    /// Each phase's wall time, as the report gives it.
    phases: String,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let fleet = if bench {
        Fleet {
            accounts: 3,
            regions: &["us-east-1", "eu-west-1"],
            per_target: 50,
            stopped_per_target: 15,
        }
    } else {
        Fleet {
            accounts: 1,
            regions: &["us-east-1"],
            per_target: 4,
            stopped_per_target: 2,
        }
    };
    let runs = if bench { 3 } else { 1 };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut table = Vec::new();
    for (name, throttle) in [("calm", 0), ("30% throttled", 30)] {
        for i in 0..runs {
            let f = rt.block_on(one_run(&fleet, throttle, i as u64));
            assert_eq!(f.ready, f.instances, "every instance READY ({name})");
            assert_eq!(
                f.throttled_counted, f.throttled_by_stage as u64,
                "every throttle counted ({name})"
            );
            eprintln!(
                "{name} #{}: wall {:.2} s, floor {:.2} s, {:.2}x ({})",
                i + 1,
                f.wall,
                f.floor,
                f.wall / f.floor,
                f.phases
            );
            table.push((name, f));
        }
    }
    if !bench {
        return;
    }
    println!(
        "| run | wall (s) | floor (s) | wall / floor | requests besides CreateImage, per instance | throttled by the stage | counted in the report |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, f) in &table {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} |",
            f.wall,
            f.floor,
            f.wall / f.floor,
            f.others as f64 / f.instances as f64,
            f.throttled_by_stage,
            f.throttled_counted
        );
    }
    let median = |name: &str| {
        let mut w: Vec<f64> = table
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, f)| f.wall)
            .collect();
        w.sort_by(f64::total_cmp);
        w[w.len() / 2]
    };
    let (calm, storm) = (median("calm"), median("30% throttled"));
    println!(
        "\nmedian wall: calm {calm:.2} s, throttled {storm:.2} s ({:.2}x calm)",
        storm / calm
    );
}

async fn one_run(fleet: &Fleet, throttle: u32, seed: u64) -> Figures {
    let moto = Moto::start();
    let accounts: Vec<String> = (1..=fleet.accounts)
        .map(|a| a.to_string().repeat(12))
        .collect();
    let mut instances = 0;
    for account in &accounts {
        for region in fleet.regions {
            let ec2 = ec2_in(&moto, account, region).await;
            let ids = launch(&ec2, fleet.per_target, false, &[("Name", "app")]).await;
            stop(&ec2, &ids[..fleet.stopped_per_target]).await;
            instances += ids.len();
        }
    }
    let mut config = format!(
        "aws:\n  regions: [{}]\nlanding_zones:\n",
        fleet.regions.join(", ")
    );
    let mut names = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        let name = format!("lz{i}");
        config.push_str(&format!(
            "  - {{name: {name}, account_id: \"{account}\", environment: nonprod}}\n"
        ));
        names.push(name);
    }
    let s = Scratch::new(&config);
    moto.stage.configure(json!({
        "seed": seed,
        "latency_ms": LATENCY_MS,
        "throttle": [{"percent": throttle}],
        "pending": {"image_seconds": PENDING, "start_seconds": PENDING},
    }));
    moto.stage.clear_log();
    let (c, o) = (s.config(), s.reports());
    let landing_zones = names.join(",");
    let began = Instant::now();
    let out = prepatch(
        Some(&moto),
        None,
        &[
            "-q",
            "-l",
            &landing_zones,
            "-c",
            c.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ],
    );
    let wall = began.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let log = moto.stage.log();
    let requests: Vec<_> = log.iter().filter(|e| e.service != "stage").collect();
    // Each request's time on the stage: its latency and moto's own work.
    let service: f64 = requests
        .iter()
        .map(|e| e.done.map_or(0.0, |d| d - e.t))
        .sum();
    if std::env::var_os("STAGE_BENCH_DETAIL").is_some() {
        let mut by_action: std::collections::BTreeMap<&str, (usize, f64, f64, f64)> =
            Default::default();
        for e in &requests {
            let d = e.done.map_or(0.0, |d| d - e.t);
            let a = by_action
                .entry(&e.action)
                .or_insert((0, 0.0, f64::MAX, 0.0));
            a.0 += 1;
            a.1 += d;
            a.2 = a.2.min(e.t);
            a.3 = a.3.max(e.t);
        }
        let t0 = requests.iter().map(|e| e.t).fold(f64::MAX, f64::min);
        for (action, (n, total, first, last)) in by_action {
            eprintln!(
                "  {action}: {n} requests, {:.0} ms each, from {:.2} s to {:.2} s",
                total / n as f64 * 1000.0,
                first - t0,
                last - t0
            );
        }
    }
    let report = s.report_json();
    let throttled_counted = report["performance"]["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .flat_map(|p| p["api_calls"].as_array().expect("api_calls").iter())
        .map(|c| c["throttled"].as_u64().unwrap_or(0))
        .sum();
    let phases = report["performance"]["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| {
            format!(
                "{} {:.1} s",
                p["phase"].as_str().unwrap_or("?"),
                p["seconds"].as_f64().unwrap_or(0.0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let ready = s
        .inventory()
        .iter()
        .filter(|r| r.get("verdict").map(String::as_str) == Some("READY"))
        .count();
    Figures {
        wall,
        // AWS's own waits, plus every request's time on the stage at the
        // configured concurrency.
        floor: 2.0 * PENDING + service / CONCURRENCY,
        instances,
        others: log
            .iter()
            .filter(|e| e.service != "stage" && e.action != "CreateImage" && e.fault.is_none())
            .count(),
        throttled_by_stage: log
            .iter()
            .filter(|e| e.fault.as_deref() == Some("throttle"))
            .count(),
        throttled_counted,
        ready,
        phases,
    }
}
