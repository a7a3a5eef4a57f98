//! The `relay` binary: read the configuration, start the cores, then wait for signals: SIGHUP reloads the apps
//! (and the TLS certificate), SIGINT/SIGTERM drain and exit.

use relay::config::{self, Command, Config};
use relay::server::Server;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread (the cores inherit the mask) so the main thread can wait for
/// them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set, then applied to this thread before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn main() {
    let config = match config::load() {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Check(c)) => {
            print!("{}", config::describe(&c));
            println!("configuration OK");
            return;
        }
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
    let scheme = if server.config().ops.tls.is_some() {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    relay::info!(
        "WebSocket: {}://{}/app/{{key}}   REST: {}://{}/apps/{{id}}/...",
        scheme.0,
        server.addr,
        scheme.1,
        server.addr
    );
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: waits on the set blocked above; `sig` is a valid out pointer.
        unsafe { libc::sigwait(&signals, &mut sig) };
        if sig == libc::SIGHUP {
            reload(&server);
            continue;
        }
        relay::info!("signal {sig}: draining connections");
        break;
    }
    server.shutdown();
    relay::info!("stopped");
}

/// SIGHUP: reads the configuration again (environment, flags, apps file) and applies what can change while
/// running. An invalid configuration changes nothing and is reported in one line naming the field.
fn reload(server: &Server) {
    let next: Config = match config::load() {
        Ok(Command::Run(c) | Command::Check(c)) => *c,
        Ok(Command::Help) => return,
        Err(e) => {
            relay::warn!("reload refused, the running configuration stays: {e}");
            return;
        }
    };
    if let Err(e) = server.reload_tls() {
        relay::warn!("reload: TLS certificate not replaced, the running one stays: {e}");
    }
    let summary = server.reload_apps(&next.apps);
    relay::info!(
        "reload: {} app(s) added, {} changed, {} removed",
        summary.added.len(),
        summary.changed.len(),
        summary.removed.len()
    );
    let later = config::restart_only_changes(server.config(), &next);
    if !later.is_empty() {
        relay::warn!(
            "reload: changes to {} take effect at the next restart",
            later.join(", ")
        );
    }
}
