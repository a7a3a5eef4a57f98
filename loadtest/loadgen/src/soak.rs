//! `soak`: mixed load for `--minutes`, one report row per `--interval`.
//!
//! * Latency: `--subscribers` connections over `--channels` public channels
//!   (`<prefix>soak-<i>`), open-loop signed publishes at `--rate`; per
//!   interval: deliveries, publish-to-delivery p50/p99/max.
//! * The mixed clients of `soak_clients.rs`: churn, slow readers (fed by a
//!   second publisher with `--slow-payload` byte messages at `--slow-rate` on
//!   `<prefix>soak-slow`), flooders, presence members.
//! * Server RSS (`--server-pid`) at the end of every interval; at the end the
//!   RSS plateau (median after the first 20% of the run) and the largest
//!   deviation from it.

use std::net::SocketAddrV4;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::{Duration, Instant};

use crate::args::{Common, SoakOpts};
use crate::fanout::{non_2xx, pub_summary};
use crate::idle::{connect_deadline, errors_obj, target};
use crate::pool::{Pool, PoolCfg};
use crate::publish::{self, PubCfg};
use crate::soak_clients::{Misc, MiscCfg, MiscCounters};
use crate::util::{
    CpuMark, Obj, Progress, hist_obj, merge, new_hist, own_cpu_obj, read_rss_kib, server_cpu_obj,
};

/// Monotonic counters summed at one instant, for interval deltas.
#[derive(Clone, Copy, Default)]
struct Snap {
    delivered: u64,
    expected: u64,
    acked: u64,
    non_2xx: u64,
    sub_disconnects: u64,
    misc_errors: u64,
    churn: u64,
    slow_cuts: u64,
    flood_frames: u64,
    presence_joins: u64,
}

fn snap(pool: &Pool, p: &publish::PubProgress, m: &MiscCounters) -> Snap {
    let t = pool.totals();
    let answered = p.answered.load(Acquire);
    let acked = p.acked.load(Relaxed);
    Snap {
        delivered: t.delivered,
        expected: p.expected.load(Relaxed),
        acked,
        non_2xx: answered.saturating_sub(acked),
        sub_disconnects: t.disconnected,
        misc_errors: m.errors.load(Relaxed),
        churn: m.churn_opened.load(Relaxed),
        slow_cuts: m.slow_cut_4100.load(Relaxed) + m.slow_cut_no_frame.load(Relaxed),
        flood_frames: m.flood_frames.load(Relaxed),
        presence_joins: m.presence_joins.load(Relaxed),
    }
}

/// RSS plateau: median of the rows after the first `warm` fraction of the
/// run, and the largest deviation from it in percent.
pub fn plateau(rows: &[(f64, u64)], total_secs: f64, warm: f64) -> Option<(u64, f64, usize)> {
    let cut = total_secs * warm;
    let mut v: Vec<u64> = rows
        .iter()
        .filter(|(t, _)| *t > cut)
        .map(|(_, r)| *r)
        .collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    v.sort_unstable();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    if median == 0 {
        return None;
    }
    let dev = v
        .iter()
        .map(|&r| (r as f64 - median as f64).abs() / median as f64 * 100.0)
        .fold(0.0, f64::max);
    Some((median, dev, n))
}

pub fn run(c: &Common, o: &SoakOpts) -> Result<String, String> {
    let start = Instant::now();
    let prog = Progress::new(start, c.quiet);
    let total = Duration::from_secs_f64(o.minutes * 60.0);
    let interval = Duration::from_secs_f64(o.interval);
    let drain = Duration::from_secs_f64(c.drain);
    let rss_start = c.server_pid.and_then(read_rss_kib);

    // 1. Latency subscribers.
    let pool = Pool::spawn(PoolCfg {
        target: target(c),
        total: o.subscribers,
        channels: o.channels,
        channel_prefix: format!("{}soak-", c.channel_prefix),
        threads: c.threads,
        rate: None,
        inflight: c.inflight,
        hs_timeout: Duration::from_secs_f64(c.hs_timeout),
        read_buf: c.read_buf.unwrap_or(4096),
        pin: c.pin.clone(),
        start,
    })
    .map_err(|e| format!("cannot start threads: {e}"))?;
    pool.wait_connected(connect_deadline(c, o.subscribers, None), |_| {});
    let subs0 = pool.totals();
    prog.line(
        "soak",
        &format!(
            "subscribers ok={} failed={}; starting {:.1} min of mixed load",
            subs0.ok, subs0.failed, o.minutes
        ),
    );

    // 2. Mixed clients.
    let misc = Misc::spawn(MiscCfg {
        target: target(c),
        key: c.key.clone(),
        secret: c.secret.clone(),
        prefix: c.channel_prefix.clone(),
        opts: o.clone(),
        hs_timeout: Duration::from_secs_f64(c.hs_timeout),
        slow_grace: o.slow_grace,
        start,
    })
    .map_err(|e| format!("cannot start soak client thread: {e}"))?;

    // 3. Publishers: latency channels, and the slow channel.
    let pub_cfg = |channels: Vec<String>, rate: f64, payload: usize, conns: usize, subs| PubCfg {
        addr: SocketAddrV4::new(c.host, c.port),
        tls: c.tls.clone(),
        app_id: c.app_id.clone(),
        key: c.key.clone(),
        secret: c.secret.clone(),
        conns,
        threads: 1,
        rate: Some(rate),
        duration: total,
        max_inflight: o.publish.pipeline,
        payload,
        channels,
        subs,
        start,
        drain,
        pin: Vec::new(),
    };
    let m0 = CpuMark::now(c.server_pid);
    let t0 = Instant::now();
    let ph = publish::start(pub_cfg(
        (0..o.channels)
            .map(|i| format!("{}soak-{i}", c.channel_prefix))
            .collect(),
        o.rate,
        o.publish.payload,
        o.publish.publishers,
        Some(pool.subs.clone()),
    ));
    let slow_ph = if o.slow_readers > 0 {
        Some(publish::start(pub_cfg(
            vec![format!("{}soak-slow", c.channel_prefix)],
            o.slow_rate,
            o.slow_payload,
            1,
            None,
        )))
    } else {
        None
    };
    let (ph, slow_ph) = match (ph, slow_ph.transpose()) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            misc.stop();
            let _ = pool.stop();
            if let Ok(a) = a {
                let _ = a.join();
            }
            if let Ok(Some(b)) = b {
                let _ = b.join();
            }
            return Err("cannot start publisher threads".into());
        }
    };

    // 4. Intervals.
    let mut rows: Vec<Obj> = Vec::new();
    let mut rss_points: Vec<(f64, u64)> = Vec::new();
    let mut all_hist = new_hist();
    let mut rss_max = rss_start;
    let mut prev = snap(&pool, &ph.progress, &misc.counters);
    let mut prev_cpu = CpuMark::now(c.server_pid);
    let _ = pool.take_hist();
    let end = t0 + total;
    let mut next = t0 + interval;
    loop {
        let last = next >= end;
        let due = if last { end } else { next };
        while Instant::now() < due {
            std::thread::sleep(Duration::from_millis(20).min(due - Instant::now()));
        }
        let h = pool.take_hist();
        merge(&mut all_hist, &h);
        let s = snap(&pool, &ph.progress, &misc.counters);
        let cpu = CpuMark::now(c.server_pid);
        let rss = c.server_pid.and_then(read_rss_kib);
        let t = t0.elapsed().as_secs_f64();
        if let Some(r) = rss {
            rss_points.push((t, r));
            rss_max = Some(rss_max.map_or(r, |m| m.max(r)));
        }
        let totals = pool.totals();
        let open = totals.ok.saturating_sub(totals.disconnected) + misc.counters.live.load(Relaxed);
        let errors = (s.non_2xx - prev.non_2xx)
            + (s.sub_disconnects - prev.sub_disconnects)
            + (s.misc_errors - prev.misc_errors);
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        let cores = match (prev_cpu.server, cpu.server) {
            (Some(a), Some(b)) => Some(
                b.since(a).total_us() as f64
                    / 1e6
                    / cpu.at.duration_since(prev_cpu.at).as_secs_f64().max(1e-9),
            ),
            _ => None,
        };
        let row = Obj::new()
            .f("t", t)
            .opt_u("rss_kib", rss)
            .u("deliveries", s.delivered - prev.delivered)
            .u("expected", s.expected - prev.expected)
            .u("p50_us", q(0.5))
            .u("p99_us", q(0.99))
            .u("max_us", if h.is_empty() { 0 } else { h.max() })
            .u("publishes", s.acked - prev.acked)
            .u("conns_open", open)
            .u("errors", errors)
            .u("churn", s.churn - prev.churn)
            .u("slow_cuts", s.slow_cuts - prev.slow_cuts)
            .u("flood_frames", s.flood_frames - prev.flood_frames)
            .u("presence_joins", s.presence_joins - prev.presence_joins)
            .opt_f("server_cores", cores);
        if !c.quiet {
            // One machine-readable line per interval (loadtest/soak reads it).
            eprintln!("soak-row {}", row.clone().finish());
        }
        rows.push(row);
        prev = s;
        prev_cpu = cpu;
        if last {
            break;
        }
        next += interval;
    }

    prog.line("soak", "load done; draining");

    // 5. Finish publishing, drain, stop everything.
    let hard = Instant::now() + Duration::from_secs(10);
    while !(ph.sending_done() && slow_ph.as_ref().is_none_or(|p| p.sending_done()))
        && Instant::now() < hard
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let drain_end = Instant::now() + drain;
    loop {
        let sent = ph.progress.sent.load(Relaxed);
        let answered = ph.progress.answered.load(Acquire);
        let expected = ph.progress.expected.load(Relaxed);
        if (answered >= sent && pool.totals().delivered >= expected) || Instant::now() >= drain_end
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    merge(&mut all_hist, &pool.take_hist());
    let m1 = CpuMark::now(c.server_pid);
    let rss_end = c.server_pid.and_then(read_rss_kib);
    let received = pool.totals().delivered;
    let final_totals = pool.totals();
    let counters = misc.counters.clone();
    let misc_errors = misc.errors.clone();
    let ttc = misc.time_to_cut.clone();
    misc.stop();
    let pool_res = pool.stop();
    let pr = ph.join();
    let slow_pr = slow_ph.map(|p| p.join());

    // 6. Report.
    let run_secs = m1.at.duration_since(m0.at).as_secs_f64();
    let mut errors = misc_errors.lock().map(|m| m.clone()).unwrap_or_default();
    let sub_disc = final_totals.disconnected;
    if sub_disc > 0 {
        *errors.entry("subscriber_disconnects".into()).or_insert(0) += sub_disc;
    }
    for (k, v) in &pool_res.errors {
        if !k.starts_with("disconnect_") {
            *errors.entry(format!("subscriber_{k}")).or_insert(0) += v;
        }
    }
    let non2xx = non_2xx(&pr);
    if non2xx > 0 {
        *errors.entry("publish_non_2xx".into()).or_insert(0) += non2xx;
    }
    for (k, v) in &pr.conn_errors {
        *errors.entry(format!("publish_{k}")).or_insert(0) += v;
    }
    let errors_total: u64 = errors.values().sum();
    let plateau_v = plateau(&rss_points, total.as_secs_f64(), 0.2);
    let rss = Obj::new()
        .opt_u("start_kib", rss_start)
        .opt_u("end_kib", rss_end)
        .opt_u("max_kib", rss_max)
        .f("warmup_secs", total.as_secs_f64() * 0.2)
        .opt_u("plateau_kib", plateau_v.map(|p| p.0))
        .opt_f("max_dev_pct", plateau_v.map(|p| p.1))
        .opt_u("plateau_samples", plateau_v.map(|p| p.2 as u64))
        .opt_b("within_10pct", plateau_v.map(|p| p.1 <= 10.0));
    let expected = pr.expected;
    let cnt = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    let out = Obj::new()
        .s("scenario", "soak")
        .s("target", &format!("{}:{}", c.host, c.port))
        .u("threads", c.threads as u64)
        .s("driver", crate::util::driver_name())
        .f("minutes", o.minutes)
        .f("interval_secs", o.interval)
        .f("run_secs", run_secs)
        .u("subscribers", o.subscribers as u64)
        .u("subscribers_ok", subs0.ok)
        .u("subscribers_failed", subs0.failed)
        .u("channels", o.channels as u64)
        .f("rate", o.rate)
        .u("payload_bytes", o.publish.payload as u64)
        .f("churn_per_sec", o.churn)
        .u("slow_readers", o.slow_readers as u64)
        .f("slow_rate", o.slow_rate)
        .u("slow_payload_bytes", o.slow_payload as u64)
        .u("flooders", o.flooders as u64)
        .u("flood_burst", o.flood_burst as u64)
        .f("flood_every_secs", o.flood_every)
        .u("presence", o.presence as u64)
        .arr("intervals", rows)
        .o("rss", rss)
        .u("deliveries_expected", expected)
        .u("deliveries_received", received)
        .u("deliveries_lost", expected.saturating_sub(received))
        .o("latency_us", hist_obj(&all_hist, true, true))
        .o("publishes", pub_summary(&pr))
        .opt_o("slow_publishes", slow_pr.as_ref().map(pub_summary))
        .u("errors_total", errors_total)
        .o("errors", errors_obj(&errors))
        .o(
            "churn",
            Obj::new()
                .u("opened", cnt(&counters.churn_opened))
                .u("failed", cnt(&counters.churn_failed))
                .u("closed", cnt(&counters.churn_closed)),
        )
        .o(
            "slow",
            Obj::new()
                .u("connections", cnt(&counters.slow_connected))
                .u("cut_4100_seen", cnt(&counters.slow_cut_4100))
                .u("cut_without_4100_frame", cnt(&counters.slow_cut_no_frame))
                .u("not_cut", cnt(&counters.slow_not_cut))
                .o(
                    "time_to_cut_ms",
                    ttc.lock()
                        .map(|h| hist_obj(&h, false, false))
                        .unwrap_or_default(),
                ),
        )
        .o(
            "flood",
            Obj::new()
                .u("frames_sent", cnt(&counters.flood_frames))
                .u("pongs", cnt(&counters.flood_pongs))
                .u("rate_limited_4301", cnt(&counters.flood_rate_limited))
                .u("client_events_received", cnt(&counters.flood_client_events))
                .u("disconnects", cnt(&counters.flood_disconnects)),
        )
        .o(
            "presence",
            Obj::new()
                .u("joins", cnt(&counters.presence_joins))
                .u("leaves", cnt(&counters.presence_leaves))
                .u("member_events", cnt(&counters.presence_member_events)),
        )
        .opt_o(
            "server_cpu",
            server_cpu_obj(&m0, &m1, received, "per_delivery"),
        )
        .o("loadgen_cpu", own_cpu_obj(&m0, &m1));
    Ok(out.finish())
}
