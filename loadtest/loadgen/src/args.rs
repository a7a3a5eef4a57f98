//! Command-line parsing (plain std::env::args, `--flag value` pairs).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::tls::TlsClient;

pub const USAGE: &str = "\
relay-loadgen: load generator for Pusher-Channels-compatible servers (protocol 7)

USAGE: relay-loadgen <idle|fanout|rest|ramp|storm|soak> [flags]

Common flags:
  --host 127.0.0.1   --port 6001   --app-id app-id   --key app-key   --secret app-secret
  --threads 1        subscriber/connection runtimes (one monoio runtime per thread)
  --server-pid PID   sample the server's RSS and CPU from /proc (optional)
  --duration SECS    publish phase length (fanout, rest; default 10)
  --pin-cpus LIST    pin loadgen runtime threads to these CPUs, e.g. 1 or 2,3
  --channel-prefix P channel names are P<i> (default channel-)
  --inflight N       handshakes in flight at once, all threads together (default 256)
  --handshake-timeout SECS  per connection connect+subscribe limit (default 10)
  --conns-per-ip N   spread source addresses 127.0.0.1.. once N connections exceed this (default 20000)
  --read-buf BYTES   initial per-connection read buffer (default 1024 idle, 4096 otherwise)
  --drain SECS       wait this long after publishing for deliveries/acks (default 2)
  --quiet            no progress lines on stderr
  --allow-non-loopback  permit a --host outside 127.0.0.0/8
  --deflate          subscribers offer permessage-deflate and inflate what comes compressed (each distinct
                     message once per thread: inflated_messages); reports count wire bytes as read from
                     the socket (wire_bytes_per_delivery)
  --json-pad         pad published data with JSON-like text (compresses like real events) instead of x's
  --tls              wss:// and https:// (needs --tls-ca FILE, or --insecure to accept any certificate)

idle   --connections N [--channels K] [--rate R] [--hold SECS]
fanout --subscribers N --channels K --rate R [--duration S] [--payload BYTES] [--publish-port P]
       [--publishers P] [--pipeline D] [--pub-threads T]
rest   --concurrency C [--duration S] [--payload BYTES]
ramp   --subscribers N --channels K --start R0 --step DR --max RMAX --p99-us BOUND
       [--step-secs S] [--payload BYTES] [--publishers P] [--pipeline D] [--keep-going]
storm  [--bystanders N] [--connections M] [--rate R] [--storms K] [--storm-secs S]
       [--pause S] [--warmup S] [--storm-channels C] [--storm-inflight I] [--storm-rst]
       [--p99-us BOUND] [--payload BYTES] [--publishers P]
soak   [--minutes N] [--interval S] [--subscribers N] [--channels K] [--rate R]
       [--churn R] [--churn-hold S] [--slow-readers N] [--slow-rate R] [--slow-payload B]
       [--slow-rcvbuf B] [--slow-max-stall S] [--slow-grace S] [--flooders N] [--flood-burst N]
       [--flood-every S] [--presence N] [--presence-hold S] [--payload BYTES]

Progress goes to stderr about once per second; one JSON object is printed on stdout at the end.
";

#[derive(Clone, Debug)]
pub struct Common {
    pub host: Ipv4Addr,
    pub port: u16,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    pub threads: usize,
    pub server_pid: Option<u32>,
    pub duration: f64,
    pub pin: Vec<usize>,
    pub channel_prefix: String,
    pub inflight: usize,
    pub hs_timeout: f64,
    pub conns_per_ip: usize,
    pub read_buf: Option<usize>,
    pub drain: f64,
    pub quiet: bool,
    /// Every connection over TLS (`--tls`).
    pub tls: Option<TlsClient>,
    /// Every subscriber offers permessage-deflate (`--deflate`).
    pub deflate: bool,
    /// Publishes pad their data with JSON-like text instead of `x`s (`--json-pad`).
    pub json_pad: bool,
}

#[derive(Clone, Debug)]
pub struct IdleOpts {
    pub connections: usize,
    pub channels: usize,
    pub rate: Option<f64>,
    pub hold: f64,
}

#[derive(Clone, Debug)]
pub struct PubOpts {
    /// Publish to this port instead of `--port` (another node of a cluster); fanout only.
    pub publish_port: Option<u16>,
    pub payload: usize,
    pub publishers: usize,
    pub pipeline: usize,
    pub pub_threads: usize,
}

#[derive(Clone, Debug)]
pub struct FanoutOpts {
    pub subscribers: usize,
    pub channels: usize,
    pub rate: f64,
    pub publish: PubOpts,
}

#[derive(Clone, Debug)]
pub struct RestOpts {
    pub concurrency: usize,
    pub payload: usize,
}

#[derive(Clone, Debug)]
pub struct RampOpts {
    pub subscribers: usize,
    pub channels: usize,
    pub start: f64,
    pub step: f64,
    pub max: f64,
    pub p99_us: u64,
    pub step_secs: f64,
    pub keep_going: bool,
    pub publish: PubOpts,
}

#[derive(Clone, Debug)]
pub struct StormOpts {
    pub bystanders: usize,
    pub connections: usize,
    pub rate: f64,
    pub storms: usize,
    pub storm_secs: f64,
    pub pause: f64,
    pub warmup: f64,
    pub storm_channels: usize,
    /// Reconnect handshakes in flight during a storm (0 = only the schedule paces them).
    pub storm_inflight: usize,
    pub storm_rst: bool,
    pub p99_us: u64,
    pub publish: PubOpts,
}

#[derive(Clone, Debug)]
pub struct SoakOpts {
    pub minutes: f64,
    pub interval: f64,
    pub subscribers: usize,
    pub channels: usize,
    pub rate: f64,
    pub publish: PubOpts,
    pub churn: f64,
    pub churn_hold: f64,
    pub slow_readers: usize,
    pub slow_rate: f64,
    pub slow_payload: usize,
    pub slow_rcvbuf: Option<usize>,
    pub slow_max_stall: f64,
    pub slow_grace: f64,
    pub flooders: usize,
    pub flood_burst: usize,
    pub flood_every: f64,
    pub presence: usize,
    pub presence_hold: f64,
}

#[derive(Clone, Debug)]
pub enum Scenario {
    Idle(IdleOpts),
    Fanout(FanoutOpts),
    Rest(RestOpts),
    Ramp(RampOpts),
    Storm(StormOpts),
    Soak(SoakOpts),
}

const BOOL_FLAGS: &[&str] = &[
    "quiet",
    "allow-non-loopback",
    "keep-going",
    "storm-rst",
    "tls",
    "deflate",
    "json-pad",
    "insecure",
    "help",
];

struct Flags {
    map: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Flags {
    fn parse(args: &[String]) -> Result<Flags, String> {
        let mut map = BTreeMap::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            let (name, value) = if let Some((n, v)) = name.split_once('=') {
                (n.to_string(), v.to_string())
            } else if BOOL_FLAGS.contains(&name) {
                (name.to_string(), "true".to_string())
            } else {
                i += 1;
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("flag --{name} needs a value"))?;
                (name.to_string(), v.clone())
            };
            if map.insert(name.clone(), value).is_some() {
                return Err(format!("flag --{name} given twice"));
            }
            i += 1;
        }
        Ok(Flags {
            map,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.used.borrow_mut().insert(name.to_string());
        match self.map.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|_| format!("invalid value for --{name}: {v:?}")),
        }
    }

    fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    fn req<T: FromStr>(&self, name: &str) -> Result<T, String> {
        self.opt(name)?
            .ok_or_else(|| format!("missing required flag --{name}"))
    }

    fn flag(&self, name: &str) -> bool {
        self.used.borrow_mut().insert(name.to_string());
        self.map.contains_key(name)
    }

    fn check_unused(&self) -> Result<(), String> {
        let used = self.used.borrow();
        for k in self.map.keys() {
            if !used.contains(k) {
                return Err(format!("unknown flag --{k} for this scenario"));
            }
        }
        Ok(())
    }
}

/// Positive and finite; capped at 1e9 so durations and rates stay in range.
fn positive(name: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v.min(1e9))
    } else {
        Err(format!("--{name} must be > 0"))
    }
}

fn non_negative(name: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(v.min(1e9))
    } else {
        Err(format!("--{name} must be >= 0"))
    }
}

fn at_least_one(name: &str, v: usize) -> Result<usize, String> {
    if v >= 1 {
        Ok(v)
    } else {
        Err(format!("--{name} must be >= 1"))
    }
}

fn pub_opts(f: &Flags) -> Result<PubOpts, String> {
    Ok(PubOpts {
        publish_port: f.opt("publish-port")?,
        payload: f.get("payload", 64usize)?.min(1 << 20),
        publishers: at_least_one("publishers", f.get("publishers", 4)?)?,
        pipeline: at_least_one("pipeline", f.get("pipeline", 64)?)?,
        pub_threads: at_least_one("pub-threads", f.get("pub-threads", 1)?)?,
    })
}

/// `--tls` with `--tls-ca FILE` (verify against it) or `--insecure` (accept any certificate).
fn tls_client(f: &Flags) -> Result<Option<TlsClient>, String> {
    let ca: Option<String> = f.opt("tls-ca")?;
    let insecure = f.flag("insecure");
    if !f.flag("tls") {
        if ca.is_some() || insecure {
            return Err("--tls-ca and --insecure go with --tls".into());
        }
        return Ok(None);
    }
    match (ca, insecure) {
        (Some(_), true) => Err("--tls-ca and --insecure exclude each other".into()),
        (None, false) => {
            Err("--tls needs --tls-ca FILE, or --insecure to accept any certificate".into())
        }
        (ca, _) => TlsClient::new(ca.as_deref()).map(Some),
    }
}

/// Parses `args` (without the program name). `Ok(None)` means help was asked for.
pub fn parse(args: &[String]) -> Result<Option<(Common, Scenario)>, String> {
    let Some(scenario) = args.first() else {
        return Ok(None);
    };
    if scenario == "--help" || scenario == "-h" || scenario == "help" {
        return Ok(None);
    }
    let f = Flags::parse(&args[1..])?;
    if f.flag("help") {
        return Ok(None);
    }
    let host_s: String = f.get("host", "127.0.0.1".to_string())?;
    let host = if host_s == "localhost" {
        Ipv4Addr::LOCALHOST
    } else {
        host_s
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("--host must be an IPv4 address, got {host_s:?}"))?
    };
    if !host.is_loopback() && !f.flag("allow-non-loopback") {
        return Err(format!(
            "--host {host} is outside 127.0.0.0/8; pass --allow-non-loopback to target it"
        ));
    }
    let pin = match f.opt::<String>("pin-cpus")? {
        None => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("invalid --pin-cpus {s:?}"))?,
    };
    let common = Common {
        host,
        port: f.get("port", 6001)?,
        app_id: f.get("app-id", "app-id".to_string())?,
        key: f.get("key", "app-key".to_string())?,
        secret: f.get("secret", "app-secret".to_string())?,
        threads: at_least_one("threads", f.get("threads", 1)?)?,
        server_pid: f.opt("server-pid")?,
        duration: positive("duration", f.get("duration", 10.0)?)?,
        pin,
        channel_prefix: f.get("channel-prefix", "channel-".to_string())?,
        inflight: at_least_one("inflight", f.get("inflight", 256)?)?,
        hs_timeout: positive("handshake-timeout", f.get("handshake-timeout", 10.0)?)?,
        conns_per_ip: at_least_one("conns-per-ip", f.get("conns-per-ip", 20_000)?)?,
        read_buf: f.opt::<usize>("read-buf")?.map(|v| v.clamp(64, 1 << 24)),
        drain: non_negative("drain", f.get("drain", 2.0)?)?.min(3600.0),
        quiet: f.flag("quiet"),
        tls: tls_client(&f)?,
        deflate: f.flag("deflate"),
        json_pad: f.flag("json-pad"),
    };
    let sc = match scenario.as_str() {
        "idle" => {
            let connections = at_least_one("connections", f.req("connections")?)?;
            Scenario::Idle(IdleOpts {
                connections,
                channels: at_least_one("channels", f.get("channels", (connections / 100).max(1))?)?,
                rate: match f.opt::<f64>("rate")? {
                    Some(r) => Some(positive("rate", r)?),
                    None => None,
                },
                hold: non_negative("hold", f.get("hold", 5.0)?)?,
            })
        }
        "fanout" => Scenario::Fanout(FanoutOpts {
            subscribers: f.req("subscribers")?,
            channels: at_least_one("channels", f.req("channels")?)?,
            rate: positive("rate", f.req("rate")?)?,
            publish: pub_opts(&f)?,
        }),
        "rest" => Scenario::Rest(RestOpts {
            concurrency: at_least_one("concurrency", f.req("concurrency")?)?,
            payload: f.get("payload", 64usize)?.min(1 << 20),
        }),
        "ramp" => {
            let r = RampOpts {
                subscribers: f.req("subscribers")?,
                channels: at_least_one("channels", f.req("channels")?)?,
                start: positive("start", f.req("start")?)?,
                step: positive("step", f.req("step")?)?,
                max: positive("max", f.req("max")?)?,
                p99_us: f.req("p99-us")?,
                step_secs: positive("step-secs", f.get("step-secs", 5.0)?)?,
                keep_going: f.flag("keep-going"),
                publish: pub_opts(&f)?,
            };
            if r.max < r.start {
                return Err("--max must be >= --start".into());
            }
            Scenario::Ramp(r)
        }
        "storm" => {
            let connections = at_least_one("connections", f.get("connections", 10_000)?)?;
            Scenario::Storm(StormOpts {
                bystanders: at_least_one("bystanders", f.get("bystanders", 1)?)?,
                connections,
                rate: positive("rate", f.get("rate", 100.0)?)?,
                storms: at_least_one("storms", f.get("storms", 3)?)?.min(1000),
                storm_secs: positive("storm-secs", f.get("storm-secs", 1.0)?)?.min(3600.0),
                pause: non_negative("pause", f.get("pause", 4.0)?)?.min(3600.0),
                warmup: non_negative("warmup", f.get("warmup", 2.0)?)?.min(3600.0),
                storm_channels: at_least_one(
                    "storm-channels",
                    f.get("storm-channels", connections)?,
                )?,
                storm_inflight: f.get("storm-inflight", 0)?,
                storm_rst: f.flag("storm-rst"),
                p99_us: f.get("p99-us", 50_000)?,
                publish: pub_opts(&f)?,
            })
        }
        "soak" => Scenario::Soak(SoakOpts {
            minutes: positive("minutes", f.get("minutes", 10.0)?)?.min(24.0 * 60.0),
            interval: positive("interval", f.get("interval", 10.0)?)?.min(3600.0),
            subscribers: f.get("subscribers", 200)?,
            channels: at_least_one("channels", f.get("channels", 10)?)?,
            rate: positive("rate", f.get("rate", 100.0)?)?,
            publish: pub_opts(&f)?,
            churn: non_negative("churn", f.get("churn", 20.0)?)?.min(100_000.0),
            churn_hold: positive("churn-hold", f.get("churn-hold", 1.0)?)?.min(3600.0),
            slow_readers: f.get("slow-readers", 2)?,
            slow_rate: positive("slow-rate", f.get("slow-rate", 50.0)?)?,
            slow_payload: f.get("slow-payload", 8000usize)?.min(1 << 20),
            slow_rcvbuf: f.opt::<usize>("slow-rcvbuf")?,
            slow_max_stall: positive("slow-max-stall", f.get("slow-max-stall", 60.0)?)?,
            slow_grace: non_negative("slow-grace", f.get("slow-grace", 3.0)?)?.min(600.0),
            flooders: f.get("flooders", 2)?,
            flood_burst: at_least_one("flood-burst", f.get("flood-burst", 300)?)?.min(100_000),
            flood_every: positive("flood-every", f.get("flood-every", 5.0)?)?,
            presence: f.get("presence", 10)?,
            presence_hold: positive("presence-hold", f.get("presence-hold", 2.0)?)?.min(3600.0),
        }),
        other => return Err(format!("unknown scenario {other:?}")),
    };
    f.check_unused()?;
    Ok(Some((common, sc)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_fanout() {
        let (c, s) = parse(&v(
            "fanout --subscribers 10 --channels 2 --rate 5 --port=7000 --quiet --threads 2",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.threads, 2);
        assert!(c.quiet);
        match s {
            Scenario::Fanout(f) => {
                assert_eq!(f.subscribers, 10);
                assert_eq!(f.publish.publishers, 4);
            }
            _ => panic!("wrong scenario"),
        }
    }

    #[test]
    fn parses_storm_and_soak_defaults() {
        let (_, s) = parse(&v("storm")).unwrap().unwrap();
        match s {
            Scenario::Storm(o) => {
                assert_eq!((o.bystanders, o.connections, o.storms), (1, 10_000, 3));
                assert_eq!((o.rate, o.storm_secs), (100.0, 1.0));
                assert_eq!(o.storm_channels, 10_000);
                assert_eq!(o.p99_us, 50_000);
                assert!(!o.storm_rst);
            }
            _ => panic!("wrong scenario"),
        }
        let (_, s) = parse(&v("storm --connections 50 --storm-rst --storms 2"))
            .unwrap()
            .unwrap();
        match s {
            Scenario::Storm(o) => assert!(o.storm_rst && o.storm_channels == 50 && o.storms == 2),
            _ => panic!("wrong scenario"),
        }
        let (_, s) = parse(&v("soak --minutes 0.5 --slow-readers 0"))
            .unwrap()
            .unwrap();
        match s {
            Scenario::Soak(o) => {
                assert_eq!(o.minutes, 0.5);
                assert_eq!(o.slow_readers, 0);
                assert_eq!(o.interval, 10.0);
            }
            _ => panic!("wrong scenario"),
        }
        assert!(parse(&v("soak --minutes 0")).is_err());
        assert!(parse(&v("storm --connections 0")).is_err());
        assert!(parse(&v("storm --hold 3")).is_err());
    }

    #[test]
    fn rejects_unknown_and_remote() {
        assert!(parse(&v("idle --connections 1 --bogus 3")).is_err());
        assert!(parse(&v("idle --connections 1 --host 10.0.0.1")).is_err());
        assert!(parse(&v("fanout --channels 1 --rate 1")).is_err());
        assert!(parse(&v("idle --connections 1 --hold NaN")).is_err());
        assert!(parse(&v("idle --connections 1")).unwrap().is_some());
    }

    #[test]
    fn tls_needs_a_ca_or_insecure() {
        let (c, _) = parse(&v("idle --connections 1")).unwrap().unwrap();
        assert!(c.tls.is_none());
        let (c, _) = parse(&v("idle --connections 1 --tls --insecure"))
            .unwrap()
            .unwrap();
        assert!(c.tls.is_some());
        assert!(parse(&v("idle --connections 1 --tls")).is_err());
        assert!(parse(&v("idle --connections 1 --insecure")).is_err());
        assert!(parse(&v("idle --connections 1 --tls --insecure --tls-ca x.pem")).is_err());
        let e = parse(&v("idle --connections 1 --tls --tls-ca /nonexistent.pem")).unwrap_err();
        assert!(e.contains("--tls-ca"), "{e}");
    }
}
