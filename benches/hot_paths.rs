//! Criterion benchmarks for relay's hot paths.
//!
//! Group names are stable (compare runs with `--save-baseline` / `--baseline`):
//! * `frame_encode`          server -> client frame encoding (`encode_text`, `outbound::app_event`);
//! * `unmask`                the client-frame XOR loop, plus `FrameDecoder::decode` of one masked text frame;
//! * `client_message_parse`  `inbound::parse` (+ `subscribe_data`) of typical client messages;
//! * `rest_signature`        REST auth (docs/protocol.md#test-vectors V1), query/head parsing, channel auth (spec
//!   A1);
//! * `fanout`                `ChannelIndex::deliver` of one pre-encoded 200-byte frame to N local subscribers.
//!
//! Quick check: `cargo bench --bench hot_paths -- --quick`.

use std::hint::black_box;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use relay::channels::index::ChannelIndex;
use relay::http::query::Query;
use relay::http::request::{MAX_HEADERS, parse_head};
use relay::protocol::auth::{md5_hex, sign_rest_query, verify_channel_auth, verify_rest_request};
use relay::protocol::session::Session;
use relay::protocol::{inbound, outbound};
use relay::socket_id::SocketId;
use relay::ws::frame::{self, FrameDecoder, Message};

// docs/protocol.md#test-vectors credentials and vectors.
const APP_KEY: &str = "a1b2c3d4e5f6a7b8c9d0";
const APP_SECRET: &str = "0f9e8d7c6b5a4f3e2d1c";
const V1_PATH: &str = "/apps/424242/events";
const V1_BODY: &[u8] = br#"{"name":"my-event","data":"{\"message\":\"hello world\"}","channels":["my-channel","presence-room"],"socket_id":"1234.5678"}"#;
const V1_SPEC_QUERY: &str = "auth_key=a1b2c3d4e5f6a7b8c9d0&auth_timestamp=1700000000&auth_version=1.0&body_md5=f848cacb117dadecedef966b423c274f&auth_signature=d76c552db1e0690662bc451c0a7ccadeebbe68a72254fd8e3e651d3a9665aec6";
const A1_SOCKET_ID: &str = "1234.5678";
const A1_CHANNEL: &str = "private-orders";
const A1_AUTH: &str =
    "a1b2c3d4e5f6a7b8c9d0:f7d185263f536703eef158a2a8d89d1db654a27cf6416be258790916987ca6ef";
const REST_WINDOW_SECS: u64 = 600;
const MAX_HEAD_BYTES: usize = 8 * 1024;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Printable JSON-safe filler (no quotes or backslashes), so payloads need no escaping.
fn filler(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A JSON string token (quotes included) of exactly `len` bytes.
fn string_token(len: usize) -> Vec<u8> {
    assert!(len >= 2);
    let mut t = Vec::with_capacity(len);
    t.push(b'"');
    t.extend_from_slice(&filler(len - 2));
    t.push(b'"');
    t
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A masked client -> server text frame (FIN set), as a browser would send it.
fn masked_client_text_frame(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    let start = f.len();
    f.extend_from_slice(payload);
    for (i, b) in f[start..].iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    f
}

// ---------------------------------------------------------------------------------------------------------------
// frame_encode
// ---------------------------------------------------------------------------------------------------------------

fn bench_frame_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    for (label, size) in [("100B", 100usize), ("1KiB", 1024), ("10KiB", 10 * 1024)] {
        g.throughput(Throughput::Bytes(size as u64));

        let payload = filler(size);
        g.bench_with_input(BenchmarkId::new("encode_text", label), &payload, |b, p| {
            b.iter(|| frame::encode_text(black_box(p)))
        });

        // `data` token sized so the event's JSON payload is exactly `size` bytes.
        let name_token = br#""my-event""#;
        let channel = "my-channel";
        let empty_payload =
            outbound::channel_event(name_token, channel, b"\"\"", None, None).len() - 2;
        let data_token = string_token(size - empty_payload + 2);
        let header = if size <= 125 { 2 } else { 4 };
        assert_eq!(
            outbound::channel_event(name_token, channel, &data_token, None, None).len(),
            header + size
        );
        g.bench_with_input(BenchmarkId::new("app_event", label), &data_token, |b, d| {
            b.iter(|| {
                outbound::channel_event(
                    black_box(name_token),
                    black_box(channel),
                    black_box(d),
                    None,
                    None,
                )
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// unmask
// ---------------------------------------------------------------------------------------------------------------

fn bench_unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    for (label, size) in [("125B", 125usize), ("1KiB", 1024), ("64KiB", 64 * 1024)] {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = filler(size);
        g.bench_function(BenchmarkId::new("unmask", label), |b| {
            // XOR is its own inverse: the buffer just flips between two states.
            b.iter(|| frame::unmask(black_box(&mut buf[..]), black_box(MASK)))
        });
    }

    // FrameDecoder::decode of one masked 200-byte client text frame (a typical client event).
    let payload = {
        let head = br#"{"event":"client-typing","channel":"private-chat","data":{"text":""#;
        let tail = br#""}}"#;
        let mut p = head.to_vec();
        p.extend_from_slice(&filler(200 - head.len() - tail.len()));
        p.extend_from_slice(tail);
        assert_eq!(p.len(), 200);
        p
    };
    let wire = masked_client_text_frame(&payload, MASK);
    {
        let mut dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Text(Bytes::from(payload.clone()))))
        );
        assert!(buf.is_empty());
    }
    g.throughput(Throughput::Bytes(payload.len() as u64));
    let mut dec = FrameDecoder::new(1 << 20);
    g.bench_function("decode_masked_text_200B", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| dec.decode(black_box(buf)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// client_message_parse
// ---------------------------------------------------------------------------------------------------------------

fn bench_client_message_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_message_parse");

    let subscribe: &[u8] =
        br#"{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}"#;
    let ping: &[u8] = br#"{"event":"pusher:ping","data":{}}"#;
    let private = format!(
        r#"{{"event":"pusher:subscribe","data":{{"auth":"{A1_AUTH}","channel":"{A1_CHANNEL}"}}}}"#
    );
    let private = private.as_bytes();

    // Sanity: the inputs parse as intended.
    {
        let m = inbound::parse(subscribe).expect("subscribe parses");
        let d = inbound::subscribe_data(&m.data).expect("subscribe data");
        assert_eq!(d.channel.as_deref(), Some("my-channel"));
        let m = inbound::parse(ping).expect("ping parses");
        assert_eq!(m.event, "pusher:ping");
        let m = inbound::parse(private).expect("private subscribe parses");
        let d = inbound::subscribe_data(&m.data).expect("private subscribe data");
        assert_eq!(d.channel.as_deref(), Some(A1_CHANNEL));
        assert_eq!(d.auth.as_deref(), Some(A1_AUTH));
    }

    g.throughput(Throughput::Bytes(subscribe.len() as u64));
    g.bench_function("subscribe", |b| {
        b.iter(|| {
            let m = inbound::parse(black_box(subscribe)).expect("parses");
            black_box(&m.event);
            inbound::subscribe_data(&m.data)
        })
    });

    g.throughput(Throughput::Bytes(ping.len() as u64));
    g.bench_function("ping", |b| {
        b.iter(|| {
            let m = inbound::parse(black_box(ping)).expect("parses");
            black_box(m.event.len())
        })
    });

    g.throughput(Throughput::Bytes(private.len() as u64));
    g.bench_function("subscribe_private_auth", |b| {
        b.iter(|| {
            let m = inbound::parse(black_box(private)).expect("parses");
            black_box(&m.event);
            inbound::subscribe_data(&m.data)
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// rest_signature
// ---------------------------------------------------------------------------------------------------------------

fn bench_rest_signature(c: &mut Criterion) {
    let mut g = c.benchmark_group("rest_signature");

    // The signer reproduces the spec's V1 URL for its fixed timestamp...
    let spec = sign_rest_query(
        "POST",
        V1_PATH,
        &[],
        V1_BODY,
        APP_KEY,
        APP_SECRET,
        1_700_000_000,
    );
    assert_eq!(
        spec, V1_SPEC_QUERY,
        "sign_rest_query disagrees with docs/protocol.md#test-vectors V1"
    );
    // ...and the bench signs with the current time, so the check passes like a live request would.
    let now = unix_now();
    let query_str = sign_rest_query("POST", V1_PATH, &[], V1_BODY, APP_KEY, APP_SECRET, now);
    let query = Query::parse(&query_str).expect("signed query parses");
    let verify = |q: &Query| {
        verify_rest_request(
            "POST",
            V1_PATH,
            q,
            V1_BODY,
            APP_KEY,
            APP_SECRET,
            now,
            REST_WINDOW_SECS,
        )
    };
    if let Err(e) = verify(&query) {
        panic!("V1 request does not verify: {e}");
    }

    g.bench_function("verify_rest_request_v1", |b| {
        b.iter(|| {
            verify_rest_request(
                black_box("POST"),
                black_box(V1_PATH),
                black_box(&query),
                black_box(V1_BODY),
                black_box(APP_KEY),
                black_box(APP_SECRET),
                black_box(now),
                black_box(REST_WINDOW_SECS),
            )
        })
    });

    g.throughput(Throughput::Bytes(V1_BODY.len() as u64));
    g.bench_function("md5_hex_v1_body", |b| {
        b.iter(|| md5_hex(black_box(V1_BODY)))
    });

    g.throughput(Throughput::Bytes(query_str.len() as u64));
    g.bench_function("query_parse_v1", |b| {
        b.iter(|| Query::parse(black_box(&query_str)))
    });

    // What pusher-http-node sends for `trigger()`.
    let head = format!(
        "POST {V1_PATH}?{query_str} HTTP/1.1\r\n\
         Content-Type: application/json\r\n\
         X-Pusher-Library: pusher-http-node 5.3.4\r\n\
         Content-Length: {}\r\n\
         User-Agent: node-fetch\r\n\
         Accept: */*\r\n\
         Accept-Encoding: gzip, deflate, br\r\n\
         Host: 127.0.0.1:6001\r\n\
         Connection: keep-alive\r\n\r\n",
        V1_BODY.len()
    );
    let head = head.as_bytes();
    {
        let h = parse_head(head, MAX_HEAD_BYTES, MAX_HEADERS)
            .expect("valid head")
            .expect("complete head");
        assert_eq!(h.path, V1_PATH);
        assert_eq!(h.query, query_str);
        assert_eq!(h.content_length, Some(V1_BODY.len()));
        assert_eq!(h.head_len, head.len());
    }
    g.throughput(Throughput::Bytes(head.len() as u64));
    g.bench_function("parse_head_sdk_post", |b| {
        b.iter(|| parse_head(black_box(head), MAX_HEAD_BYTES, MAX_HEADERS))
    });

    assert_eq!(
        verify_channel_auth(APP_KEY, APP_SECRET, A1_SOCKET_ID, A1_CHANNEL, None, A1_AUTH),
        Ok(()),
        "spec A1 vector does not verify"
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_channel_auth_a1", |b| {
        b.iter(|| {
            verify_channel_auth(
                black_box(APP_KEY),
                black_box(APP_SECRET),
                black_box(A1_SOCKET_ID),
                black_box(A1_CHANNEL),
                black_box(None),
                black_box(A1_AUTH),
            )
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------------------------
// fanout
// ---------------------------------------------------------------------------------------------------------------

const FANOUT_CHANNEL: &str = "fanout-channel";
/// Same as the server default (`max_outbound_queue_bytes`).
const OUTBOX_CAP: usize = 1024 * 1024;
/// Deliveries per timed section; the outboxes are drained (untimed) after each, so they hold at most
/// `DELIVERIES_PER_DRAIN` frames and the cap is never approached.
const DELIVERIES_PER_DRAIN: u64 = 16;

/// A 200-byte app-event frame, encoded once like a real publish.
fn fanout_frame() -> Bytes {
    const FRAME_LEN: usize = 200;
    let name = br#""my-event""#;
    // Payload length of the same event with empty data (small, so a 2-byte header).
    let base = outbound::channel_event(name, FANOUT_CHANNEL, b"\"\"", None, None).len() - 2;
    // Frames with 126..=65535 payload bytes have a 4-byte header.
    let data = string_token(FRAME_LEN - 4 - base + 2);
    let f = outbound::channel_event(name, FANOUT_CHANNEL, &data, None, None);
    assert_eq!(f.len(), FRAME_LEN);
    f
}

struct Fanout {
    index: ChannelIndex,
    sessions: Vec<Rc<Session>>,
    batch: Vec<Bytes>,
}

impl Fanout {
    fn new(subscribers: usize) -> Self {
        let mut index = ChannelIndex::new(1);
        let sessions: Vec<Rc<Session>> = (0..subscribers as u64)
            .map(|i| {
                let id = SocketId {
                    random: 1_000_000 + i * 7919,
                    unique: i + 1,
                };
                Rc::new(Session::new(id, 0, -1, OUTBOX_CAP))
            })
            .collect();
        for s in &sessions {
            assert!(index.subscribe(s, FANOUT_CHANNEL).is_some());
        }
        assert_eq!(index.local_count(0, FANOUT_CHANNEL), subscribers);
        let mut f = Fanout {
            index,
            sessions,
            batch: Vec::with_capacity(DELIVERIES_PER_DRAIN as usize),
        };
        // Park every outbox like an idle writer task (registers a waker), as in the server's steady state.
        f.drain();
        f
    }

    /// Empties every outbox as the writer tasks would, until each reports Pending (waker registered again).
    fn drain(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        for s in &self.sessions {
            assert!(s.outbox.is_open(), "outbox cap hit or session aborted");
            while let Poll::Ready(more) = s.outbox.poll_take(&mut cx, &mut self.batch, usize::MAX) {
                assert!(more);
                self.batch.clear();
            }
            debug_assert_eq!(s.outbox.queued_bytes(), 0);
        }
    }

    fn run(&mut self, iters: u64, frame: &Bytes, except: Option<SocketId>) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(DELIVERIES_PER_DRAIN);
            let start = Instant::now();
            for _ in 0..n {
                black_box(self.index.deliver(
                    black_box(0),
                    black_box(FANOUT_CHANNEL),
                    black_box(frame),
                    black_box(except),
                ));
            }
            total += start.elapsed();
            self.drain();
            left -= n;
        }
        total
    }
}

fn bench_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let frame = fanout_frame();
    for n in [100usize, 1_000, 10_000] {
        let mut fan = Fanout::new(n);
        g.throughput(Throughput::Elements(n as u64));

        assert_eq!(
            fan.index
                .deliver(0, FANOUT_CHANNEL, &frame, None)
                .delivered(),
            n as u64
        );
        fan.drain();
        g.bench_function(BenchmarkId::new("deliver", n), |b| {
            b.iter_custom(|iters| fan.run(iters, &frame, None))
        });

        let except = Some(fan.sessions[n / 2].socket_id);
        assert_eq!(
            fan.index
                .deliver(0, FANOUT_CHANNEL, &frame, except)
                .delivered(),
            n as u64 - 1
        );
        fan.drain();
        g.bench_function(BenchmarkId::new("deliver_except", n), |b| {
            b.iter_custom(|iters| fan.run(iters, &frame, except))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_frame_encode,
    bench_unmask,
    bench_client_message_parse,
    bench_rest_signature,
    bench_fanout
);
criterion_main!(benches);
