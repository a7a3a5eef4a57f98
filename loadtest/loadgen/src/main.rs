//! relay-loadgen: load generator for Pusher-Channels-compatible servers
//! (relay, sockudo, soketi). See README.md for scenarios and output fields.

mod args;
mod fanout;
mod idle;
mod net;
mod pool;
mod publish;
mod rest;
mod sign;
mod soak;
mod soak_clients;
mod storm;
mod tls;
mod util;
mod ws;

#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;

use args::Scenario;

/// Runs one parsed scenario and returns the JSON report.
fn run_scenario(common: &args::Common, scenario: &Scenario) -> Result<String, String> {
    let limit = util::raise_nofile();
    let conns = match scenario {
        Scenario::Idle(o) => o.connections,
        Scenario::Fanout(f) => f.subscribers + f.publish.publishers,
        Scenario::Ramp(r) => r.subscribers + r.publish.publishers,
        Scenario::Rest(r) => r.concurrency,
        Scenario::Storm(s) => s.bystanders + s.connections + s.publish.publishers,
        Scenario::Soak(s) => {
            s.subscribers
                + s.slow_readers
                + s.flooders
                + s.presence
                + (s.churn * s.churn_hold * 2.0) as usize
                + s.publish.publishers
                + 1
        }
    };
    if limit > 0 && conns as u64 + 64 > limit && !common.quiet {
        eprintln!(
            "relay-loadgen: warning: {conns} connections but RLIMIT_NOFILE is {limit}; \
             expect connect failures"
        );
    }
    match scenario {
        Scenario::Idle(o) => idle::run(common, o),
        Scenario::Fanout(f) => fanout::run_fanout(common, f),
        Scenario::Ramp(r) => fanout::run_ramp(common, r),
        Scenario::Rest(r) => rest::run(common, r),
        Scenario::Storm(s) => storm::run(common, s),
        Scenario::Soak(s) => soak::run(common, s),
    }
}

/// Parses and runs (used by the tests); `Ok(None)` = help requested.
#[cfg(test)]
fn run(args: &[String]) -> Result<Option<String>, String> {
    match args::parse(args)? {
        None => Ok(None),
        Some((c, s)) => run_scenario(&c, &s).map(Some),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (common, scenario) = match args::parse(&args) {
        Ok(Some(p)) => p,
        Ok(None) => {
            print!("{}", args::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("relay-loadgen: {e}\n");
            eprint!("{}", args::USAGE);
            std::process::exit(2);
        }
    };
    publish::JSON_PAD.store(common.json_pad, std::sync::atomic::Ordering::Relaxed);
    match run_scenario(&common, &scenario) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("relay-loadgen: {e}");
            println!("{}", util::Obj::new().s("error", &e).finish());
            std::process::exit(1);
        }
    }
}
