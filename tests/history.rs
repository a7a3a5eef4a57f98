//! History, recovery, the event log and rate limits over real sockets (docs/protocol.md#history,
//! #relay-extensions).

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

fn history_server(extra: &[&str]) -> Server {
    let mut args = vec!["--history-enabled", "true"];
    args.extend_from_slice(extra);
    Server::start_with(&args, &[])
}

fn events_page(server: &Server, channel: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let (status, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels/{channel}/events"),
        params,
        "",
    );
    (status, json(&body))
}

fn ids_and_data(page: &Value) -> Vec<(String, String)> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["data"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn seq(id: &str) -> u64 {
    id.split_once('-').unwrap().1.parse().unwrap()
}

#[test]
fn history_is_off_unless_turned_on_and_frames_stay_pushers() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("c");
    server.publish("c", "e", "d");
    let e = c.expect_event("e");
    assert_eq!(e.raw, r#"{"event":"e","channel":"c","data":"d"}"#);
    let (status, body) = events_page(&server, "c", &[]);
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("history_enabled"),
        "{body:?}"
    );
}

#[test]
fn live_events_carry_ids_and_pages_list_what_is_kept_oldest_first() {
    let server = history_server(&["--history-max", "5"]);
    let mut c = server.client();
    c.subscribe("c");
    let mut live = Vec::new();
    for n in 1..=7 {
        let (status, _) = server.publish("c", "e", &format!("{{\"n\":{n}}}"));
        assert_eq!(status, 200);
        let e = c.expect_event("e");
        live.push(e.value["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        live.iter().map(|i| seq(i)).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    // Five kept, in pages of two, each exactly once.
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("limit", "2")];
        if let Some(c) = &cursor {
            params.push(("cursor", c));
        }
        let (status, page) = events_page(&server, "c", &params);
        assert_eq!(status, 200, "{page:?}");
        got.extend(ids_and_data(&page));
        let first = &page["events"][0];
        assert_eq!(first["event"].as_str(), Some("e"));
        assert_eq!(first["channel"].as_str(), Some("c"));
        assert!(first["published_at"].as_u64().unwrap() > 1_600_000_000_000);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        got.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(),
        live[2..]
    );
    assert_eq!(got[0].1, r#"{"n":3}"#, "data byte for byte");
    for (k, v) in [
        ("limit", "0"),
        ("limit", "6"),
        ("limit", "x"),
        ("cursor", "zz"),
        ("cursor", "1-1"),
    ] {
        let (status, body) = events_page(&server, "c", &[(k, v)]);
        assert_eq!(status, 400, "{k}={v}: {body:?}");
    }
}

#[test]
fn a_client_back_with_its_last_id_gets_what_it_missed_then_live_events() {
    let server = history_server(&[]);
    let mut c = server.client();
    c.subscribe("news");
    for n in 1..=3 {
        server.publish("news", "e", &n.to_string());
    }
    let mut last = String::new();
    for _ in 1..=3 {
        last = c.expect_event("e").value["id"]
            .as_str()
            .unwrap()
            .to_string();
    }
    c.close_tcp();
    for n in 4..=5 {
        server.publish("news", "e", &n.to_string());
    }
    let mut back = server.client();
    back.send_text(&format!(
        r#"{{"event":"pusher:subscribe","data":{{"channel":"news","last_event_id":"{last}"}}}}"#
    ));
    back.expect_event("pusher_internal:subscription_succeeded");
    assert_eq!(back.expect_event("e").data_str(), "4");
    assert_eq!(back.expect_event("e").data_str(), "5");
    let r = back.expect_event("relay:recovery");
    assert_eq!(r.data_str(), r#"{"recovered":true,"replayed":2}"#);
    server.publish("news", "e", "6");
    assert_eq!(back.expect_event("e").data_str(), "6");
    // An id from nowhere: nothing replayed, and the client is told so.
    let mut lost = server.client();
    lost.send_text(
        r#"{"event":"pusher:subscribe","data":{"channel":"news","last_event_id":"12-34"}}"#,
    );
    lost.expect_event("pusher_internal:subscription_succeeded");
    let r = lost.expect_event("relay:recovery");
    assert_eq!(r.data_str(), r#"{"recovered":false,"replayed":0}"#);
    lost.expect_silence(Duration::from_millis(200));
}

#[test]
fn the_event_log_lists_recent_server_events_newest_first() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("logged");
    server.publish("logged", "hello", "12345");
    c.expect_event("hello");
    let (status, body) = server.rest("GET", &format!("/apps/{APP_ID}/events/log"), &[], "");
    assert_eq!(status, 200, "{body}");
    let log = json(&body);
    let entries = log["events"].as_array().unwrap();
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types[..3],
        ["publish", "subscribe", "connection_opened"],
        "{body}"
    );
    let publish = &entries[0];
    assert_eq!(publish["channel"].as_str(), Some("logged"));
    assert_eq!(publish["event"].as_str(), Some("hello"));
    assert_eq!(publish["source"].as_str(), Some("rest"));
    assert_eq!(
        publish["size"].as_u64(),
        Some(7),
        "the data token, quotes included"
    );
    let times: Vec<u64> = entries
        .iter()
        .map(|e| e["time_ms"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let (status, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/events/log"),
        &[("limit", "1")],
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(json(&body)["events"].as_array().unwrap().len(), 1);
    let (status, _) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/events/log"),
        &[("limit", "1000")],
        "",
    );
    assert_eq!(status, 400);
}

#[test]
fn publishes_over_the_rate_get_429_and_deliver_nothing() {
    let server = Server::start_with(
        &["--rate-limit-enabled", "true", "--rate-limit-max", "5"],
        &[],
    );
    let mut c = server.client();
    c.subscribe("r");
    let path = format!("/apps/{APP_ID}/events");
    let body = r#"{"name":"e","channel":"r","data":"x"}"#;
    // Probe until a fresh second starts, so the window is whole.
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..20 {
        let query = relay::protocol::auth::sign_rest_query(
            "POST",
            &path,
            &[],
            body.as_bytes(),
            APP_KEY,
            APP_SECRET,
            now(),
        );
        let req = format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let r = raw(server.port, req.as_bytes());
        match parse_response(&r).0 {
            200 => accepted += 1,
            429 => {
                refused = Some(r);
                break;
            }
            s => panic!("{s}: {r}"),
        }
    }
    let r = refused.expect("no request was refused");
    assert!(r.contains("\r\nRetry-After: 1\r\n"), "{r}");
    assert!(
        json(&parse_response(&r).1)["error"]
            .as_str()
            .unwrap()
            .contains("5 events per second")
    );
    assert!(
        (1..=5).contains(&accepted),
        "{accepted} accepted before the refusal"
    );
    // What was accepted is delivered; what was refused is not.
    for _ in 0..accepted {
        c.expect_event("e");
    }
    c.expect_silence(Duration::from_millis(300));
    let (status, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/events/log"),
        &[("limit", "5")],
        "",
    );
    assert_eq!(status, 200);
    assert!(
        body.contains(r#""type":"rate_limited","events":1"#),
        "{body}"
    );
}
