//! TLS on the main port (README "TLS"): https and wss with a certificate made here, a plain-HTTP client on the TLS
//! port, a start with a missing key, reloading the certificate, and the WebSocket byte counters.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{APP_ID, APP_KEY, APP_SECRET, Server, TIMEOUT};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files into a directory of its own.
struct Certs {
    dir: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("relay-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Certs {
            dir,
            der: CertificateDer::from(Vec::new()),
        };
        c.renew();
        c
    }

    /// A new key and certificate, written over the same two files.
    fn renew(&mut self) {
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .unwrap();
        std::fs::write(self.cert(), made.cert.pem()).unwrap();
        std::fs::write(self.key(), made.signing_key.serialize_pem()).unwrap();
        self.der = made.cert.der().clone();
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("RELAY_TLS_CERT".into(), path(&self.cert())),
            ("RELAY_TLS_KEY".into(), path(&self.key())),
        ]
    }

    fn start(&self, extra: &[(&str, &str)]) -> Server {
        let env = self.env();
        let mut all: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.extend_from_slice(extra);
        Server::start_with(&[], &all)
    }

    /// A client that trusts this certificate (as it is now) and offers h2 before http/1.1.
    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn agent(&self) -> ureq::Agent {
        let root = ureq::tls::Certificate::from_der(self.der.as_ref()).to_owned();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .new_agent()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A finished handshake to 127.0.0.1:port.
fn tls_connect(port: u16, config: Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

/// The certificate the server presented.
fn peer_cert(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// GET /health on an open TLS connection (keep-alive); returns status and body.
fn get_health(tls: &mut Tls) -> (u16, String) {
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let text = String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
                return common::parse_response(&text);
            }
        }
        let n = tls.read(&mut chunk).expect("read response");
        assert!(n > 0, "closed before the response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A WebSocket client (over TLS, or plain TCP for comparison) that counts the bytes each way: frames, not TLS
/// records.
struct TlsWs<S: Read + Write = Tls> {
    tls: S,
    buf: Vec<u8>,
    /// Frame bytes sent after the upgrade.
    sent: usize,
    /// Frame bytes received after the upgrade.
    received: usize,
}

impl TlsWs {
    fn connect(port: u16, config: Arc<ClientConfig>) -> TlsWs {
        TlsWs::upgrade(tls_connect(port, config))
    }
}

impl TlsWs<TcpStream> {
    fn connect_plain(port: u16) -> TlsWs<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
        TlsWs::upgrade(tcp)
    }
}

impl<S: Read + Write> TlsWs<S> {
    fn upgrade(mut tls: S) -> TlsWs<S> {
        let req = format!(
            "GET /app/{APP_KEY}?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tls.read(&mut chunk).expect("upgrade response");
            assert!(n > 0, "closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        buf.drain(..end);
        let received = buf.len();
        TlsWs {
            tls,
            buf,
            sent: 0,
            received,
        }
    }

    /// Masked text frames, all in one write.
    fn send_texts(&mut self, texts: &[String]) {
        let mut out = Vec::new();
        for t in texts {
            let p = t.as_bytes();
            out.push(0x81);
            match p.len() {
                n if n < 126 => out.push(0x80 | n as u8),
                n if n < 65536 => {
                    out.push(0x80 | 126);
                    out.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    out.push(0x80 | 127);
                    out.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            let key = [0x37, 0xfa, 0x21, 0x3d];
            out.extend_from_slice(&key);
            out.extend(p.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        self.tls.write_all(&out).unwrap();
        self.sent += out.len();
    }

    /// The next text frame's payload.
    fn recv_text(&mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                match opcode {
                    1 => return String::from_utf8(payload).unwrap(),
                    8 => panic!("closed: {payload:?}"),
                    _ => continue,
                }
            }
            assert!(Instant::now() < deadline, "no frame in time");
            let mut chunk = [0u8; 65536];
            let n = self.tls.read(&mut chunk).expect("read frame");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
            self.received += n;
        }
    }

    fn expect_event(&mut self, name: &str) -> String {
        let text = self.recv_text();
        assert!(
            text.contains(&format!(r#""event":"{name}""#)),
            "expected {name}, got {}",
            &text[..text.len().min(200)]
        );
        text
    }
}

/// (opcode, payload, bytes used) of the first complete unmasked frame.
fn parse_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, off) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if b.len() < off + len {
        return None;
    }
    Some((b[0] & 0x0f, b[off..off + len].to_vec(), off + len))
}

/// A signed REST request over https; returns status and body.
fn rest(agent: &ureq::Agent, port: u16, path: &str, body: &str) -> (u16, String) {
    let query = relay::protocol::auth::sign_rest_query(
        "POST",
        path,
        &[],
        body.as_bytes(),
        APP_KEY,
        APP_SECRET,
        common::now(),
    );
    let mut resp = agent
        .post(&format!("https://127.0.0.1:{port}{path}?{query}"))
        .content_type("application/json")
        .send(body)
        .expect("https request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

#[test]
fn health_over_https_and_only_http_1_1_is_offered() {
    let certs = Certs::new("health");
    let server = certs.start(&[]);
    let mut resp = certs
        .agent()
        .get(&format!("https://127.0.0.1:{}/health", server.port))
        .call()
        .expect("GET /health over https");
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(body.contains("ok"), "{body}");

    // The client offers h2 first; the server picks the only protocol it speaks.
    let mut tls = tls_connect(server.port, certs.client_config());
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Keep-alive: two requests on one connection.
    assert_eq!(get_health(&mut tls).0, 200);
    assert_eq!(get_health(&mut tls).0, 200);
}

#[test]
fn websocket_over_tls_receives_a_publish_made_over_https() {
    let certs = Certs::new("ws");
    let server = certs.start(&[]);
    let mut ws = TlsWs::connect(server.port, certs.client_config());
    ws.expect_event("pusher:connection_established");
    ws.send_texts(&[
        r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"news"}}"#.to_string(),
    ]);
    ws.expect_event("pusher_internal:subscription_succeeded");

    let agent = certs.agent();
    let path = format!("/apps/{APP_ID}/events");
    let (status, body) = rest(
        &agent,
        server.port,
        &path,
        r#"{"name":"flash","channel":"news","data":"{\"n\":1}"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let ev = ws.expect_event("flash");
    assert!(ev.contains(r#""channel":"news""#), "{ev}");

    // A burst larger than one TLS write (rustls takes at most 64 KiB of plaintext at a time): ten events of
    // about 9 KiB in one batch reach the subscriber whole and in order.
    let pad = "x".repeat(9000);
    let batch: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"name":"big","channel":"news","data":"{i}:{pad}"}}"#))
        .collect();
    let body = format!(r#"{{"batch":[{}]}}"#, batch.join(","));
    let (status, resp) = rest(
        &agent,
        server.port,
        &format!("/apps/{APP_ID}/batch_events"),
        &body,
    );
    assert_eq!(status, 200, "{resp}");
    for i in 0..10 {
        let ev = ws.expect_event("big");
        assert!(
            ev.contains(&format!(r#""data":"{i}:xxx"#)),
            "event {i} out of order"
        );
        assert!(ev.contains(&pad), "event {i} cut short");
    }

    // Many messages in one TLS write, more plaintext than rustls buffers at once (a 50 KiB message among them):
    // every one is read and answered.
    let mut pings = vec![format!(
        r#"{{"event":"pusher:ping","data":{{"pad":"{}"}}}}"#,
        "y".repeat(50_000)
    )];
    pings.extend((0..300).map(|_| r#"{"event":"pusher:ping","data":{}}"#.to_string()));
    ws.send_texts(&pings);
    for _ in 0..pings.len() {
        ws.expect_event("pusher:pong");
    }
}

#[test]
fn plain_http_to_the_tls_port_is_refused_and_the_server_goes_on() {
    let certs = Certs::new("plain");
    let server = certs.start(&[("RELAY_HTTP_READ_TIMEOUT", "2")]);
    // A plain HTTP request is told, in plain HTTP, to use TLS.
    let (status, body) = common::http(server.port, "GET", "/health", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("TLS port"), "{body}");
    // A plain WebSocket upgrade gets the same answer, not a 101.
    let text = common::raw(
        server.port,
        format!("GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes(),
    );
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    // Bytes that are neither HTTP nor TLS: the connection is closed at once (after a TLS alert).
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("closed by the server");
    assert!(!out.starts_with(b"HTTP"), "{out:?}");
    // A client that stops half-way through its handshake, or says nothing, is cut at the handshake timeout
    // (RELAY_HTTP_READ_TIMEOUT), not held.
    for first in [&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01][..], &[]] {
        let started = Instant::now();
        let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        idle.write_all(first).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        idle.read_to_end(&mut rest).expect("closed by the server");
        let took = started.elapsed();
        assert!(
            took > Duration::from_millis(1500) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }

    // TLS clients are served as before.
    let mut tls = tls_connect(server.port, certs.client_config());
    assert_eq!(get_health(&mut tls).0, 200);
    // No line per failed connection above debug (a periodic summary line of the counts is fine).
    let log = server.log();
    assert!(
        !log.contains("tls handshake") && !log.contains("plain HTTP"),
        "{log}"
    );
}

#[test]
fn a_missing_key_file_stops_the_start_and_names_the_setting() {
    let certs = Certs::new("missing");
    for (cert, key, field) in [
        (
            path(&certs.cert()),
            "/nonexistent/relay-key.pem".to_string(),
            "RELAY_TLS_KEY",
        ),
        (
            "/nonexistent/relay-cert.pem".to_string(),
            path(&certs.key()),
            "RELAY_TLS_CERT",
        ),
        // A key file that holds a certificate, not a key.
        (path(&certs.cert()), path(&certs.cert()), "RELAY_TLS_KEY"),
        // A certificate file that holds only a key.
        (path(&certs.key()), path(&certs.key()), "RELAY_TLS_CERT"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["--port", "0", "--workers", "1", "--host", "127.0.0.1"])
            .env("RELAY_METRICS_PORT", "0")
            .env("RELAY_TLS_CERT", &cert)
            .env("RELAY_TLS_KEY", &key)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with cert {cert}, key {key}");
        assert!(out.status.code().is_some(), "killed by a signal: {stderr}");
        assert!(stderr.contains(field), "{field} not named: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn reload_serves_the_new_certificate_to_new_connections_and_keeps_the_old_on_error() {
    let mut certs = Certs::new("reload");
    let mut config = relay::config::Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        workers: 1,
        ..Default::default()
    };
    config.ops.metrics.port = 0;
    config.ops.tls = Some(relay::config::TlsSettings {
        cert: certs.cert(),
        key: certs.key(),
    });
    let server = relay::server::Server::start(config).expect("start with TLS");
    let port = server.addr.port();
    let first = certs.der.clone();
    let mut before = tls_connect(port, certs.client_config());
    assert_eq!(peer_cert(&before), first);

    certs.renew();
    assert_ne!(certs.der, first);
    // Not yet reloaded: still the first certificate.
    assert_eq!(peer_cert(&tls_connect(port, accept_any())), first);
    server.reload_tls().expect("reload");
    let mut after = tls_connect(port, certs.client_config());
    assert_eq!(peer_cert(&after), certs.der);
    assert_eq!(get_health(&mut after).0, 200);
    // A connection made before the reload goes on.
    assert_eq!(get_health(&mut before).0, 200);

    // A broken key: the reload fails naming the setting, and the certificate stays.
    let second = certs.der.clone();
    std::fs::write(certs.key(), "not a key").unwrap();
    let err = server.reload_tls().unwrap_err();
    assert!(err.contains("RELAY_TLS_KEY"), "{err}");
    std::fs::remove_file(certs.cert()).unwrap();
    let err = server.reload_tls().unwrap_err();
    assert!(err.contains("RELAY_TLS_CERT"), "{err}");
    let mut still = tls_connect(port, certs.client_config());
    assert_eq!(peer_cert(&still), second);
    assert_eq!(get_health(&mut still).0, 200);
    drop((before, after, still));
    server.shutdown();
}

#[test]
fn sighup_reloads_the_certificate() {
    let mut certs = Certs::new("sighup");
    let server = certs.start(&[]);
    let first = certs.der.clone();
    assert_eq!(peer_cert(&tls_connect(server.port, accept_any())), first);
    certs.renew();
    // SAFETY: signals the relay child this test started.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + TIMEOUT;
    while peer_cert(&tls_connect(server.port, accept_any())) == first {
        assert!(
            Instant::now() < deadline,
            "still the old certificate after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut tls = tls_connect(server.port, certs.client_config());
    assert_eq!(peer_cert(&tls), certs.der);
    assert_eq!(get_health(&mut tls).0, 200);
}

#[test]
fn websocket_bytes_are_counted_as_frames_not_tls_records() {
    let certs = Certs::new("bytes");
    let metrics_port = free_port();
    let server = certs.start(&[("RELAY_METRICS_PORT", &metrics_port)]);
    let ws = TlsWs::connect(server.port, certs.client_config());
    let agent = certs.agent();
    let publish = |body: &str| rest(&agent, server.port, &format!("/apps/{APP_ID}/events"), body).0;
    count_bytes(ws, publish, &metrics_port);
}

#[test]
fn websocket_bytes_are_counted_on_plain_connections_too() {
    let metrics_port = free_port();
    let server = Server::start_with(&[], &[("RELAY_METRICS_PORT", &metrics_port)]);
    let ws = TlsWs::connect_plain(server.port);
    let publish = |body: &str| {
        server
            .rest("POST", &format!("/apps/{APP_ID}/events"), &[], body)
            .0
    };
    count_bytes(ws, publish, &metrics_port);
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

/// Subscribes, pings, receives a publish, then waits for the server's totals to equal exactly the frame bytes
/// that went each way.
fn count_bytes<S: Read + Write>(
    mut ws: TlsWs<S>,
    publish: impl Fn(&str) -> u16,
    metrics_port: &str,
) {
    ws.expect_event("pusher:connection_established");
    ws.send_texts(&[
        r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"counted"}}"#.to_string(),
    ]);
    ws.expect_event("pusher_internal:subscription_succeeded");
    ws.send_texts(&[r#"{"event":"pusher:ping","data":{}}"#.to_string()]);
    ws.expect_event("pusher:pong");
    let status = publish(r#"{"name":"e","channel":"counted","data":"{}"}"#);
    assert_eq!(status, 200);
    ws.expect_event("e");

    // The totals are summed from the cores' blocks on each scrape; wait for them to match exactly what went
    // over the WebSocket.
    let port: u16 = metrics_port.parse().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, text) = common::http(port, "GET", "/metrics", "");
        let sent = metric(&text, "relay_ws_bytes_sent_total");
        let received = metric(&text, "relay_ws_bytes_received_total");
        if sent == Some(ws.received as u64) && received == Some(ws.sent as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server counted sent {sent:?} / received {received:?}; the client received {} / sent {}",
            ws.received,
            ws.sent
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// A client that accepts any certificate (to see which one the server sends).
fn accept_any() -> Arc<ClientConfig> {
    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Arc::new(config)
}
