//! permessage-deflate (RFC 7692) over real sockets: the negotiation answer, compressed publications (RSV1, the
//! same JSON as a plain client gets), the minimum size, compressed client messages, the limits on the way in and
//! `RELAY_COMPRESSION=off` (docs/protocol.md#framing).

mod common;

use common::*;
use sonic_rs::JsonValueTrait;

const OFFER: &str = DEFLATE_OFFER;
const ANSWER: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";
const TAIL: [u8; 4] = DEFLATE_TAIL;

fn path() -> String {
    format!("/app/{APP_KEY}?protocol=7&client=js&version=8.4.0&flash=false")
}

/// A client that negotiated permessage-deflate (asserted), past connection_established.
fn deflate_client(server: &Server) -> Client {
    offering(server, Some(OFFER))
}

/// A client that offers no extension, whatever `RELAY_TEST_DEFLATE` says.
fn plain_client(server: &Server) -> Client {
    offering(server, None)
}

fn offering(server: &Server, offer: Option<&str>) -> Client {
    let (mut ws, head) = Ws::connect_offering(server.port, &path(), offer);
    assert_eq!(head.contains(ANSWER), offer.is_some(), "{head}");
    let established = ws.recv_text_frame();
    assert!(
        !established.rsv1(),
        "frames built per connection stay plain"
    );
    let ev = json(std::str::from_utf8(&established.payload).unwrap());
    let socket_id = json(ev["data"].as_str().unwrap())["socket_id"]
        .as_str()
        .unwrap()
        .to_string();
    Client { ws, socket_id }
}

#[test]
fn the_test_bomb_is_what_it_claims() {
    let mut piece = compress(&vec![b' '; 1 << 20]);
    piece.extend_from_slice(&TAIL);
    let mut bomb = piece.repeat(4);
    bomb.truncate(bomb.len() - TAIL.len());
    assert_eq!(inflate(&bomb), vec![b' '; 4 << 20]);
}

/// A typical event: a JSON object of about `len` bytes, as a backend would publish it.
fn event_data(len: usize) -> String {
    let mut s = String::from(r#"{"orders":["#);
    let mut i = 0;
    while s.len() < len {
        s.push_str(&format!(
            r#"{{"id":{},"symbol":"SYM{}","side":"{}","price":{}.{:02},"qty":{},"status":"open"}},"#,
            10_000 + i * 37,
            i % 17,
            if i % 3 == 0 { "buy" } else { "sell" },
            90 + i * 7 % 23,
            i * 13 % 100,
            1 + i * 11 % 50
        ));
        i += 1;
    }
    s.pop();
    s.push_str("]}");
    s
}

#[test]
fn the_upgrade_answers_offers_it_can_honour_and_declines_the_rest() {
    let server = Server::start();
    let with_window = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
                       client_no_context_takeover; server_max_window_bits=15\r\n";
    for (offer, answer) in [
        (Some(OFFER), Some(ANSWER)),
        (Some("permessage-deflate"), Some(ANSWER)),
        (
            Some("permessage-deflate; server_max_window_bits=10, permessage-deflate"),
            Some(ANSWER),
        ),
        // RFC 7692 §7.1.2.1: accepting server_max_window_bits means echoing it.
        (
            Some("permessage-deflate; server_max_window_bits=15; client_max_window_bits"),
            Some(with_window),
        ),
        (Some("permessage-deflate; server_max_window_bits=10"), None),
        (Some("permessage-deflate; unknown_param"), None),
        (Some("x-webkit-deflate-frame"), None),
        (None, None),
    ] {
        let (mut ws, head) = Ws::connect_offering(server.port, &path(), offer);
        match answer {
            Some(line) => assert!(head.contains(line), "{offer:?}: {head}"),
            None => assert!(
                !head.contains("Sec-WebSocket-Extensions"),
                "{offer:?}: {head}"
            ),
        }
        // Declined or not, the connection goes on.
        ws.expect_event("pusher:connection_established");
    }
}

#[test]
fn a_publication_arrives_compressed_with_rsv1_and_inflates_to_what_a_plain_client_gets() {
    let server = Server::start();
    let mut plain = plain_client(&server);
    let mut compressed = deflate_client(&server);
    plain.subscribe("market");
    compressed.send_text(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"market"}}"#);
    let ok = compressed.recv_text_frame();
    assert!(!ok.rsv1(), "subscription_succeeded is built per connection");
    for len in [1024, 2048, 4096] {
        let data = event_data(len);
        assert_eq!(server.publish("market", "orders", &data).0, 200);
        let want = plain.expect_event("orders");
        let got = compressed.recv_text_frame();
        assert!(got.rsv1(), "{len} bytes: RSV1 set");
        let text = inflate(&got.payload);
        assert_eq!(std::str::from_utf8(&text).unwrap(), want.raw, "{len} bytes");
        let ratio = got.payload.len() as f64 / want.raw.len() as f64;
        assert!(ratio <= 0.35, "{len} bytes: {ratio:.3} of the plain size");
    }
}

#[test]
fn below_the_minimum_size_a_publication_is_plain() {
    let server = Server::start_with(&[], &[("RELAY_COMPRESSION_MIN_BYTES", "600")]);
    let mut c = deflate_client(&server);
    c.send_text(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"news"}}"#);
    c.recv_text_frame();
    // About 300 bytes of data, about 400 with its quotes escaped and the envelope: under 600, plain.
    let small = event_data(300);
    server.publish("news", "small", &small);
    let f = c.recv_text_frame();
    assert!(!f.rsv1(), "under the minimum: plain");
    assert!(
        std::str::from_utf8(&f.payload)
            .unwrap()
            .contains("\"small\"")
    );
    let big = event_data(600);
    server.publish("news", "big", &big);
    let f = c.recv_text_frame();
    assert!(f.rsv1(), "at or over the minimum: compressed");
    assert!(
        String::from_utf8(inflate(&f.payload))
            .unwrap()
            .contains("\"big\"")
    );
}

#[test]
fn a_compressed_client_event_is_relayed_whole_or_fragmented() {
    let server = Server::start();
    let mut a = deflate_client(&server);
    let mut b = plain_client(&server);
    let mut c = deflate_client(&server);
    for cl in [&mut a, &mut b, &mut c] {
        private_sub(cl, "private-room");
    }
    let data = event_data(1500);
    let msg = format!(
        r#"{{"event":"client-note","channel":"private-room","data":{}}}"#,
        data
    );
    let deflated = compress(msg.as_bytes());
    // FIN + RSV1 + text.
    a.send_raw_frame(0x80 | 0x40 | 0x1, &deflated);
    let e = b.expect_event("client-note");
    assert_eq!(e.data_json(), json(&data));
    let f = c.recv_text_frame();
    assert!(
        f.rsv1(),
        "a compressed subscriber gets the compressed frame"
    );
    assert_eq!(std::str::from_utf8(&inflate(&f.payload)).unwrap(), e.raw);

    // Fragmented: RSV1 on the first frame only (RFC 7692 §6.1).
    let (first, rest) = deflated.split_at(deflated.len() / 2);
    a.send_raw_frame(0x40 | 0x1, first);
    a.send_raw_frame(0x80, rest);
    assert_eq!(b.expect_event("client-note").raw, e.raw);
    // A plain message on the same connection is still read as plain.
    a.send_text(r#"{"event":"client-plain","channel":"private-room","data":{"x":1}}"#);
    b.expect_event("client-plain");
}

#[test]
fn a_message_inflating_past_the_limit_is_refused_with_1009() {
    let server = Server::start_with(&[], &[("RELAY_MAX_WS_MESSAGE_BYTES", "524288")]);
    let mut c = deflate_client(&server);
    // 256 MiB of one repeated byte, about 260 KB compressed: under the 512 KiB limit on what arrives. Built from
    // one sync-flushed 1 MiB piece repeated (each piece ends on a byte boundary, so the copies chain).
    let mut piece = compress(&vec![b' '; 1 << 20]);
    piece.extend_from_slice(&TAIL);
    let mut bomb = piece.repeat(256);
    bomb.truncate(bomb.len() - TAIL.len());
    assert!(bomb.len() < 512 * 1024, "{}", bomb.len());
    c.send_raw_frame(0x80 | 0x40 | 0x1, &bomb);
    let (code, _) = c.expect_close();
    assert_eq!(code, Some(1009));
    // Inflating stopped at the limit: the server's peak memory never came near the 256 MiB it inflates to.
    let (_, peak) = server.memory_kib();
    assert!(peak < 128 * 1024, "peak RSS {peak} KiB");
    // Up to the limit is fine.
    let mut c = deflate_client(&server);
    let pad = "x".repeat(500 * 1024);
    let msg = format!(r#"{{"event":"pusher:ping","data":{{"pad":"{pad}"}}}}"#);
    c.send_raw_frame(0x80 | 0x40 | 0x1, &compress(msg.as_bytes()));
    c.expect_event("pusher:pong");
}

#[test]
fn rsv1_without_negotiation_is_a_protocol_error() {
    let server = Server::start();
    let mut c = plain_client(&server);
    c.send_raw_frame(
        0x80 | 0x40 | 0x1,
        &compress(br#"{"event":"pusher:ping","data":{}}"#),
    );
    assert_eq!(c.expect_close().0, Some(1002));
}

#[test]
fn rsv1_on_control_or_continuation_frames_is_a_protocol_error() {
    let server = Server::start();
    let mut c = deflate_client(&server);
    c.send_raw_frame(0x80 | 0x40 | 0x9, b"hi");
    assert_eq!(c.expect_close().0, Some(1002), "RSV1 on a ping");

    let mut c = deflate_client(&server);
    let deflated = compress(br#"{"event":"pusher:ping","data":{}}"#);
    let (first, rest) = deflated.split_at(4);
    c.send_raw_frame(0x40 | 0x1, first);
    c.send_raw_frame(0x80 | 0x40, rest);
    assert_eq!(c.expect_close().0, Some(1002), "RSV1 on a continuation");

    let mut c = deflate_client(&server);
    c.send_raw_frame(0x80 | 0x20 | 0x1, b"{}");
    assert_eq!(c.expect_close().0, Some(1002), "RSV2 is still reserved");
}

#[test]
fn an_invalid_compressed_message_closes_with_1007() {
    let server = Server::start();
    let mut c = deflate_client(&server);
    c.send_raw_frame(0x80 | 0x40 | 0x1, &[0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(c.expect_close().0, Some(1007));
}

#[test]
fn compression_off_declines_every_offer() {
    let server = Server::start_with(&[], &[("RELAY_COMPRESSION", "off")]);
    let (mut ws, head) = Ws::connect_offering(server.port, &path(), Some(OFFER));
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    ws.expect_event("pusher:connection_established");
    ws.subscribe("market");
    server.publish("market", "orders", &event_data(2048));
    let f = ws.recv_text_frame();
    assert!(!f.rsv1());
    // Not negotiated: RSV1 from the client is a protocol error.
    ws.send_raw_frame(0x80 | 0x40 | 0x1, &compress(b"{}"));
    assert_eq!(ws.expect_close().0, Some(1002));
}
