//! `rest`: C keep-alive connections publishing back to back (closed loop)
//! to one channel without subscribers; request rate, status codes, latency
//! and server CPU per request.

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::args::{Common, RestOpts};
use crate::idle::errors_obj;
use crate::publish::{self, PubCfg};
use crate::util::{CpuMark, Obj, Progress, hist_obj, own_cpu_obj, server_cpu_obj};

pub fn run(c: &Common, r: &RestOpts) -> Result<String, String> {
    let start = Instant::now();
    let mut prog = Progress::new(start, c.quiet);
    let duration = Duration::from_secs_f64(c.duration);
    let drain = Duration::from_secs_f64(c.drain);
    let channel = format!("{}rest-nobody", c.channel_prefix);
    let m0 = CpuMark::now(c.server_pid);
    let ph = publish::start(PubCfg {
        addr: SocketAddrV4::new(c.host, c.port),
        tls: c.tls.clone(),
        app_id: c.app_id.clone(),
        key: c.key.clone(),
        secret: c.secret.clone(),
        conns: r.concurrency,
        threads: c.threads,
        rate: None,
        duration,
        max_inflight: 1,
        payload: r.payload,
        channels: vec![channel.clone()],
        subs: None,
        start,
        drain,
        pin: c.pin.clone(),
    })
    .map_err(|e| format!("cannot start publisher threads: {e}"))?;
    let p = ph.progress.clone();
    let hard = Instant::now() + duration + drain + Duration::from_secs(10);
    let mut last = 0u64;
    while !ph.sending_done() && Instant::now() < hard {
        std::thread::sleep(Duration::from_millis(20));
        if prog.due() {
            let a = p.answered.load(Relaxed);
            prog.line(
                "rest",
                &format!(
                    "answered={a} ({}/s) acked={}",
                    a - last,
                    p.acked.load(Relaxed)
                ),
            );
            last = a;
        }
    }
    let drain_end = Instant::now() + drain;
    while p.answered.load(Relaxed) < p.sent.load(Relaxed) && Instant::now() < drain_end {
        std::thread::sleep(Duration::from_millis(2));
    }
    let m1 = CpuMark::now(c.server_pid);
    let pr = ph.join();
    let window = m1.at.duration_since(m0.at).as_secs_f64();
    let status = pr
        .status
        .iter()
        .fold(Obj::new(), |o, (k, v)| o.u(&k.to_string(), *v));
    let non2xx: u64 = pr
        .status
        .iter()
        .filter(|(k, _)| !(200..300).contains(*k))
        .map(|(_, v)| *v)
        .sum();
    let out = Obj::new()
        .s("scenario", "rest")
        .s("target", &format!("{}:{}", c.host, c.port))
        .u("threads", c.threads as u64)
        .s("driver", crate::util::driver_name())
        .u("concurrency", r.concurrency as u64)
        .u("payload_bytes", r.payload as u64)
        .s("channel", &channel)
        .f("duration_secs", duration.as_secs_f64())
        .f("window_secs", window)
        .u("requests_sent", pr.sent)
        .u("requests", pr.answered)
        .u("requests_2xx", pr.acked)
        .u("non_2xx", non2xx)
        .u("unanswered", pr.unanswered)
        .f(
            "requests_per_sec",
            if window > 0.0 {
                pr.answered as f64 / window
            } else {
                0.0
            },
        )
        .o("status", status)
        .o("conn_errors", errors_obj(&pr.conn_errors))
        .o("latency_us", hist_obj(&pr.latency, false, false))
        .opt_o(
            "server_cpu",
            server_cpu_obj(&m0, &m1, pr.answered, "per_request"),
        )
        .o("loadgen_cpu", own_cpu_obj(&m0, &m1));
    Ok(out.finish())
}
