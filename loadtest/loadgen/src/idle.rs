//! `idle`: open and subscribe N connections, hold them, measure server RSS.

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::args::{Common, IdleOpts};
use crate::pool::{Pool, PoolCfg};
use crate::util::{CpuMark, Obj, Progress, hist_obj, own_cpu_obj, read_rss_kib, server_cpu_obj};
use crate::ws::Target;

pub fn target(c: &Common) -> Target {
    Target {
        addr: SocketAddrV4::new(c.host, c.port),
        key: c.key.clone(),
        per_ip: c.conns_per_ip,
        tls: c.tls.clone(),
        deflate: c.deflate,
    }
}

pub fn errors_obj(m: &BTreeMap<String, u64>) -> Obj {
    m.iter().fold(Obj::new(), |o, (k, v)| o.u(k, *v))
}

/// Deadline for the connect phase: generous, but bounded.
pub fn connect_deadline(c: &Common, n: usize, rate: Option<f64>) -> Instant {
    let by_rate = rate.map(|r| n as f64 / r).unwrap_or(0.0);
    let secs = 60.0 + 2.0 * by_rate + c.hs_timeout + n as f64 / 500.0;
    Instant::now() + Duration::from_secs_f64(secs)
}

pub fn run(c: &Common, o: &IdleOpts) -> Result<String, String> {
    let start = Instant::now();
    let mut prog = Progress::new(start, c.quiet);
    let rss_before = c.server_pid.and_then(read_rss_kib);
    let m0 = CpuMark::now(c.server_pid);
    let pool = Pool::spawn(PoolCfg {
        target: target(c),
        total: o.connections,
        channels: o.channels,
        channel_prefix: c.channel_prefix.clone(),
        threads: c.threads,
        rate: o.rate,
        inflight: c.inflight,
        hs_timeout: Duration::from_secs_f64(c.hs_timeout),
        read_buf: c.read_buf.unwrap_or(1024),
        pin: c.pin.clone(),
        start,
    })
    .map_err(|e| format!("cannot start threads: {e}"))?;
    let complete = pool.wait_connected(connect_deadline(c, o.connections, o.rate), |t| {
        if prog.due() {
            prog.line(
                "idle",
                &format!(
                    "connecting ok={} failed={} of {}",
                    t.ok, t.failed, o.connections
                ),
            );
        }
    });
    let connected_at = Instant::now();
    let m1 = CpuMark::now(c.server_pid);
    let rss_subscribed = c.server_pid.and_then(read_rss_kib);
    let t = pool.totals();
    prog.line(
        "idle",
        &format!(
            "connected ok={} failed={} in {:.2}s; holding {:.0}s",
            t.ok,
            t.failed,
            connected_at.duration_since(start).as_secs_f64(),
            o.hold
        ),
    );
    let hold_end = Instant::now() + Duration::from_secs_f64(o.hold);
    while Instant::now() < hold_end {
        std::thread::sleep(Duration::from_millis(50).min(hold_end - Instant::now()));
        if prog.due() {
            let t = pool.totals();
            prog.line(
                "idle",
                &format!(
                    "holding ok={} disconnected={} pongs={}",
                    t.ok, t.disconnected, t.pongs
                ),
            );
        }
    }
    let rss_after = c.server_pid.and_then(read_rss_kib);
    let m2 = CpuMark::now(c.server_pid);
    let held = pool.totals();
    let res = pool.stop();

    let connect_secs = (res.last_subscribed_ns.saturating_sub(res.first_connect_ns)) as f64 / 1e9;
    let ok = held.ok;
    let per_conn = |after: Option<u64>| match (rss_before, after) {
        (Some(b), Some(a)) if ok > 0 => Some(a.saturating_sub(b) as f64 / ok as f64),
        _ => None,
    };
    let out = Obj::new()
        .s("scenario", "idle")
        .s("target", &format!("{}:{}", c.host, c.port))
        .u("threads", c.threads as u64)
        .s("driver", crate::util::driver_name())
        .u("connections", o.connections as u64)
        .u("channels", o.channels as u64)
        .opt_f("rate_limit", o.rate)
        .u("connections_ok", ok)
        .u("connections_failed", held.failed)
        .b("connect_phase_complete", complete)
        .o("errors", errors_obj(&res.errors))
        .f("connect_secs", connect_secs)
        .f(
            "connect_rate_per_sec",
            if connect_secs > 0.0 {
                ok as f64 / connect_secs
            } else {
                0.0
            },
        )
        .o("handshake_us", hist_obj(&res.handshake, true, false))
        .f("hold_secs", o.hold)
        .u("disconnected_during_hold", held.disconnected)
        .u("pongs_sent", held.pongs)
        .opt_u("server_rss_before_kib", rss_before)
        .opt_u("server_rss_subscribed_kib", rss_subscribed)
        .opt_u("server_rss_after_hold_kib", rss_after)
        .opt_f("server_rss_per_conn_kib", per_conn(rss_after))
        .opt_o(
            "server_cpu_connect",
            server_cpu_obj(&m0, &m1, ok, "per_connection"),
        )
        .opt_o(
            "server_cpu_hold",
            server_cpu_obj(&m1, &m2, ok, "per_connection"),
        )
        .o("loadgen_cpu_connect", own_cpu_obj(&m0, &m1));
    Ok(out.finish())
}
