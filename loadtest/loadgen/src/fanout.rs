//! `fanout` and `ramp`: N subscribers over K channels, then open-loop signed
//! publishes; publish->delivery latency, loss, and CPU per delivery.

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::{Duration, Instant};

use crate::args::{Common, FanoutOpts, PubOpts, RampOpts};
use crate::idle::{connect_deadline, errors_obj, target};
use crate::pool::{Pool, PoolCfg, PoolResult};
use crate::publish::{self, PubCfg, PubResult};
use crate::util::{CpuMark, Obj, Progress, hist_obj, own_cpu_obj, p99, server_cpu_obj};
use crate::ws::{INFLATED_MESSAGES, WIRE_BYTES_READ};

/// One publish step's measurements.
pub struct Step {
    pub rate: f64,
    pub p99_us: u64,
    pub lost: u64,
    pub passed_basic: bool,
    obj: Obj,
}

struct Subscribers {
    ok: u64,
    failed: u64,
    connect_secs: f64,
    complete: bool,
}

fn connect_subscribers(
    c: &Common,
    n: usize,
    k: usize,
    start: Instant,
    prog: &mut Progress,
    name: &str,
) -> Result<(Pool, Subscribers), String> {
    let pool = Pool::spawn(PoolCfg {
        target: target(c),
        total: n,
        channels: k,
        channel_prefix: c.channel_prefix.clone(),
        threads: c.threads,
        rate: None,
        inflight: c.inflight,
        hs_timeout: Duration::from_secs_f64(c.hs_timeout),
        read_buf: c.read_buf.unwrap_or(4096),
        pin: c.pin.clone(),
        start,
    })
    .map_err(|e| format!("cannot start threads: {e}"))?;
    let t0 = Instant::now();
    let complete = pool.wait_connected(connect_deadline(c, n, None), |t| {
        if prog.due() {
            prog.line(
                name,
                &format!("subscribing ok={} failed={} of {n}", t.ok, t.failed),
            );
        }
    });
    let t = pool.totals();
    let connect_secs = t0.elapsed().as_secs_f64();
    prog.line(
        name,
        &format!(
            "subscribed ok={} failed={} in {connect_secs:.2}s",
            t.ok, t.failed
        ),
    );
    Ok((
        pool,
        Subscribers {
            ok: t.ok,
            failed: t.failed,
            connect_secs,
            complete,
        },
    ))
}

fn subscriber_fields(o: Obj, s: &Subscribers, res: &PoolResult, n: usize, k: usize) -> Obj {
    o.u("subscribers", n as u64)
        .u("subscribers_ok", s.ok)
        .u("subscribers_failed", s.failed)
        .b("subscribe_phase_complete", s.complete)
        .u("channels", k as u64)
        .f("subscribe_secs", s.connect_secs)
        .o("handshake_us", hist_obj(&res.handshake, true, false))
        .o("connection_errors", errors_obj(&res.errors))
}

#[allow(clippy::too_many_arguments)]
fn run_step(
    c: &Common,
    pool: &Pool,
    channels: usize,
    rate: f64,
    duration: Duration,
    popts: &PubOpts,
    start: Instant,
    prog: &mut Progress,
    name: &str,
) -> Result<Step, String> {
    let _ = pool.take_hist(); // discard anything before this step
    let base = pool.totals();
    let wire0 = WIRE_BYTES_READ.load(Relaxed);
    let inflated0 = INFLATED_MESSAGES.load(Relaxed);
    let drain = Duration::from_secs_f64(c.drain);
    let m0 = CpuMark::now(c.server_pid);
    let ph = publish::start(PubCfg {
        addr: SocketAddrV4::new(c.host, popts.publish_port.unwrap_or(c.port)),
        tls: c.tls.clone(),
        app_id: c.app_id.clone(),
        key: c.key.clone(),
        secret: c.secret.clone(),
        conns: popts.publishers,
        threads: popts.pub_threads,
        rate: Some(rate),
        duration,
        max_inflight: popts.pipeline,
        payload: popts.payload,
        channels: (0..channels)
            .map(|i| format!("{}{}", c.channel_prefix, i))
            .collect(),
        subs: Some(pool.subs.clone()),
        start,
        drain,
        pin: Vec::new(),
    })
    .map_err(|e| format!("cannot start publisher threads: {e}"))?;
    let progress = ph.progress.clone();
    let line = |prog: &Progress| {
        let t = pool.totals();
        let got = t.delivered - base.delivered;
        prog.line(
            name,
            &format!(
                "rate={rate:.0}/s sent={} acked={} delivered={} expected={} conns={}",
                progress.sent.load(Relaxed),
                progress.acked.load(Relaxed),
                got,
                progress.expected.load(Relaxed),
                t.ok - t.disconnected
            ),
        );
    };
    let hard = Instant::now() + duration + Duration::from_secs(10);
    while !ph.sending_done() && Instant::now() < hard {
        std::thread::sleep(Duration::from_millis(20));
        if prog.due() {
            line(prog);
        }
    }
    // Drain: all requests answered and every expected delivery received.
    let drain_end = Instant::now() + drain;
    loop {
        // Order matters: answered (Acquire) before expected, see publish.rs.
        let sent = progress.sent.load(Relaxed);
        let answered = progress.answered.load(Acquire);
        let expected = progress.expected.load(Relaxed);
        let got = pool.totals().delivered - base.delivered;
        if (answered >= sent && got >= expected) || Instant::now() >= drain_end {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let m1 = CpuMark::now(c.server_pid);
    let after = pool.totals();
    let received = after.delivered - base.delivered;
    let wire = WIRE_BYTES_READ.load(Relaxed) - wire0;
    let inflated = INFLATED_MESSAGES.load(Relaxed) - inflated0;
    let pr = ph.join();
    let hist = pool.take_hist();
    line(prog);

    let window = m1.at.duration_since(m0.at).as_secs_f64();
    let expected = pr.expected;
    let lost = expected.saturating_sub(received);
    let extra = received.saturating_sub(expected);
    let non2xx = non_2xx(&pr);
    let generator_kept_up = pr.sent as f64 >= pr.scheduled as f64 * 0.99;
    let publish = pub_summary(&pr);
    let obj = Obj::new()
        .f("rate", rate)
        .f("duration_secs", duration.as_secs_f64())
        .o("publishes", publish)
        .f("window_secs", window)
        .u("deliveries_expected", expected)
        .u("deliveries_received", received)
        .u("deliveries_lost", lost)
        .u("deliveries_extra", extra)
        .f(
            "deliveries_per_sec",
            if window > 0.0 {
                received as f64 / window
            } else {
                0.0
            },
        )
        .o("latency_us", hist_obj(&hist, true, true))
        // As read from the subscribers' sockets, compressed or not (frames, pings and all).
        .u("wire_bytes_received", wire)
        .f(
            "wire_bytes_per_delivery",
            if received > 0 {
                wire as f64 / received as f64
            } else {
                0.0
            },
        )
        // Compressed messages the generator inflated: one per publication per thread when every other copy was
        // recognised (see ws::inflate_prefix); more means its cache missed.
        .u("inflated_messages", inflated)
        .u(
            "disconnects",
            after.disconnected.saturating_sub(base.disconnected),
        )
        .opt_o(
            "server_cpu",
            server_cpu_obj(&m0, &m1, received, "per_delivery"),
        )
        .o("loadgen_cpu", own_cpu_obj(&m0, &m1));
    Ok(Step {
        rate,
        p99_us: p99(&hist),
        lost,
        passed_basic: lost == 0 && non2xx == 0 && pr.unanswered == 0 && generator_kept_up,
        obj,
    })
}

/// Publishes answered with a status outside 2xx.
pub fn non_2xx(pr: &PubResult) -> u64 {
    pr.status
        .iter()
        .filter(|(k, _)| !(200..300).contains(*k))
        .map(|(_, v)| *v)
        .sum()
}

/// The `publishes` object of a publish run (fanout, ramp, storm, soak).
pub fn pub_summary(pr: &PubResult) -> Obj {
    let status = pr
        .status
        .iter()
        .fold(Obj::new(), |o, (k, v)| o.u(&k.to_string(), *v));
    Obj::new()
        .u("scheduled", pr.scheduled)
        .u("sent", pr.sent)
        .u("answered", pr.answered)
        .u("acked", pr.acked)
        .u("non_2xx", non_2xx(pr))
        .u("unanswered", pr.unanswered)
        .o("status", status)
        .o("conn_errors", errors_obj(&pr.conn_errors))
        .f(
            "rate_achieved",
            if pr.send_secs > 0.0 {
                pr.sent as f64 / pr.send_secs
            } else {
                0.0
            },
        )
        .b(
            "generator_kept_up",
            pr.sent as f64 >= pr.scheduled as f64 * 0.99,
        )
        .u("lag_max_us", pr.lag_max_us)
        .u("late", pr.late)
        .o("latency_us", hist_obj(&pr.latency, false, false))
}

fn header(c: &Common, scenario: &str) -> Obj {
    Obj::new()
        .s("scenario", scenario)
        .s("target", &format!("{}:{}", c.host, c.port))
        .u("threads", c.threads as u64)
        .s("driver", crate::util::driver_name())
}

fn pub_fields(o: Obj, p: &PubOpts) -> Obj {
    o.u("payload_bytes", p.payload as u64)
        .u("publishers", p.publishers as u64)
        .u("pipeline", p.pipeline as u64)
}

pub fn run_fanout(c: &Common, f: &FanoutOpts) -> Result<String, String> {
    let start = Instant::now();
    let mut prog = Progress::new(start, c.quiet);
    let (pool, subs) =
        connect_subscribers(c, f.subscribers, f.channels, start, &mut prog, "fanout")?;
    let step = run_step(
        c,
        &pool,
        f.channels,
        f.rate,
        Duration::from_secs_f64(c.duration),
        &f.publish,
        start,
        &mut prog,
        "fanout",
    );
    let pool_res = pool.stop();
    let step = step?;
    let o = subscriber_fields(
        header(c, "fanout"),
        &subs,
        &pool_res,
        f.subscribers,
        f.channels,
    );
    let o = pub_fields(o, &f.publish).merge(step.obj);
    Ok(o.finish())
}

pub fn run_ramp(c: &Common, r: &RampOpts) -> Result<String, String> {
    let start = Instant::now();
    let mut prog = Progress::new(start, c.quiet);
    let (pool, subs) = connect_subscribers(c, r.subscribers, r.channels, start, &mut prog, "ramp")?;
    let mut steps = Vec::new();
    let mut best: Option<f64> = None;
    let mut rate = r.start;
    let mut err = None;
    // Bounded: at most 10_000 steps.
    for _ in 0..10_000 {
        if rate > r.max + 1e-9 {
            break;
        }
        let step = match run_step(
            c,
            &pool,
            r.channels,
            rate,
            Duration::from_secs_f64(r.step_secs),
            &r.publish,
            start,
            &mut prog,
            "ramp",
        ) {
            Ok(s) => s,
            Err(e) => {
                err = Some(e);
                break;
            }
        };
        let pass = step.passed_basic && step.p99_us < r.p99_us;
        prog.line(
            "ramp",
            &format!(
                "step rate={:.0}/s p99={}us lost={} -> {}",
                step.rate,
                step.p99_us,
                step.lost,
                if pass { "pass" } else { "FAIL" }
            ),
        );
        if pass {
            best = Some(best.map_or(step.rate, |b: f64| b.max(step.rate)));
        }
        steps.push(step.obj.b("pass", pass));
        if !pass && !r.keep_going {
            break;
        }
        rate += r.step;
    }
    let pool_res = pool.stop();
    if let Some(e) = err {
        return Err(e);
    }
    let o = subscriber_fields(
        header(c, "ramp"),
        &subs,
        &pool_res,
        r.subscribers,
        r.channels,
    );
    let o = pub_fields(o, &r.publish)
        .f("start", r.start)
        .f("step", r.step)
        .f("max", r.max)
        .u("p99_bound_us", r.p99_us)
        .f("step_secs", r.step_secs)
        .opt_f("best_rate", best)
        .arr("steps", steps);
    Ok(o.finish())
}
