//! The `relay` binary: read the configuration, start the cores, wait for SIGINT/SIGTERM, drain.

use relay::config::{self, Command};
use relay::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Blocks SIGINT and SIGTERM in every thread (the cores inherit the mask) so the main thread can wait for them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set, then applied to this thread before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() {
    let config = match config::load() {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Help) => {
            print!("{}", config::usage());
            return;
        }
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::exit(2);
        }
    };
    let signals = block_signals();
    // Ids and keys only: a secret printed at start ends up in every log collector.
    let apps: Vec<_> = config
        .apps
        .iter()
        .map(|a| (a.id.clone(), a.key.clone()))
        .collect();
    let workers = config.workers;
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::exit(1);
        }
    };
    relay::info!(
        "listening on {} ({} workers, driver {})",
        server.addr,
        workers,
        server.driver
    );
    if let Some(m) = server.metrics_addr {
        relay::info!("metrics: http://{m}/metrics");
    }
    for (id, key) in &apps {
        relay::info!("app id={id} key={key}");
    }
    relay::info!(
        "WebSocket: ws://{}/app/{{key}}   REST: http://{}/apps/{{id}}/...",
        server.addr,
        server.addr
    );
    let mut sig: libc::c_int = 0;
    // SAFETY: waits on the set blocked above; `sig` is a valid out pointer.
    unsafe { libc::sigwait(&signals, &mut sig) };
    relay::info!("signal {sig}: draining connections");
    server.shutdown();
    relay::info!("stopped");
}
