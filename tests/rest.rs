//! REST API over real sockets (docs/protocol.md#http-api, #rest-signing; checklist 65–88): publishing reaches
//! subscribers on every worker, signing rules, limits and queries.

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::JsonValueTrait;

fn events_path() -> String {
    format!("/apps/{APP_ID}/events")
}

#[test]
fn one_trigger_reaches_clients_on_every_worker_in_order() {
    let server = Server::start();
    // Enough connections that the kernel's SO_REUSEPORT hash puts some on each worker.
    let mut clients: Vec<_> = (0..12).map(|_| server.client()).collect();
    for c in &mut clients {
        c.subscribe("fan");
    }
    for i in 0..50 {
        let (status, body) = server.publish("fan", "tick", &format!("{{\"i\":{i}}}"));
        assert_eq!((status, body.as_str()), (200, "{}"));
    }
    for c in &mut clients {
        for i in 0..50 {
            let e = c.expect_event("tick");
            assert_eq!(e.channel(), Some("fan"));
            assert_eq!(e.data_str(), format!("{{\"i\":{i}}}"), "publish order kept");
        }
    }
    let (_, stats) = http(server.port, "GET", "/stats", "");
    assert_eq!(stats, r#"{"connections":12,"channels":1}"#);
}

#[test]
fn data_is_delivered_byte_for_byte() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("raw");
    let body = r#"{"name":"my-event","channel":"raw","data":"{\"message\":\"h\u00e9llo \\\"world\\\"\"}"}"#;
    assert_eq!(server.rest("POST", &events_path(), &[], body).0, 200);
    let e = c.expect_event("my-event");
    assert_eq!(
        e.raw,
        r#"{"event":"my-event","channel":"raw","data":"{\"message\":\"h\u00e9llo \\\"world\\\"\"}"}"#
    );
    // Non-string data is sent as its JSON text.
    let body = r#"{"name":"obj","channel":"raw","data":{"a":1}}"#;
    assert_eq!(server.rest("POST", &events_path(), &[], body).0, 200);
    assert_eq!(c.expect_event("obj").data_str(), r#"{"a":1}"#);
    // Empty data is valid.
    assert_eq!(server.publish("raw", "empty", "").0, 200);
    assert_eq!(c.expect_event("empty").data_str(), "");
}

#[test]
fn multi_channel_trigger_and_socket_exclusion() {
    let server = Server::start();
    let mut a = server.client();
    let mut b = server.client();
    a.subscribe("c1");
    b.subscribe("c2");
    b.subscribe("c1");
    let body = format!(
        r#"{{"name":"m","channels":["c1","c2","c1"],"data":"d","socket_id":"{}"}}"#,
        a.socket_id
    );
    assert_eq!(server.rest("POST", &events_path(), &[], &body).0, 200);
    let mut got: Vec<String> = (0..2)
        .map(|_| b.expect_event("m").channel().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["c1", "c2"]);
    b.expect_silence(Duration::from_millis(200));
    a.expect_silence(Duration::from_millis(200));
}

#[test]
fn both_batch_paths_publish_every_event() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("b1");
    c.subscribe("b2");
    for path in ["batch_events", "events/batch"] {
        let body = r#"{"batch":[{"name":"e1","channel":"b1","data":"1"},{"name":"e2","channel":"b2","data":"2"}]}"#;
        let (status, resp) = server.rest("POST", &format!("/apps/{APP_ID}/{path}"), &[], body);
        assert_eq!((status, resp.as_str()), (200, "{}"), "{path}");
        assert_eq!(c.expect_event("e1").channel(), Some("b1"));
        assert_eq!(c.expect_event("e2").channel(), Some("b2"));
    }
}

#[test]
fn batch_limits_are_all_or_nothing() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("bl");
    let item = |d: &str| format!(r#"{{"name":"e","channel":"bl","data":"{d}"}}"#);
    let ten: Vec<String> = (0..10).map(|i| item(&i.to_string())).collect();
    let (status, _) = server.rest(
        "POST",
        &format!("/apps/{APP_ID}/batch_events"),
        &[],
        &format!(r#"{{"batch":[{}]}}"#, ten.join(",")),
    );
    assert_eq!(status, 200);
    for _ in 0..10 {
        c.expect_event("e");
    }
    let eleven: Vec<String> = (0..11).map(|i| item(&i.to_string())).collect();
    let (status, body) = server.rest(
        "POST",
        &format!("/apps/{APP_ID}/batch_events"),
        &[],
        &format!(r#"{{"batch":[{}]}}"#, eleven.join(",")),
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("Batch too large (more than 10 events)"),
        "{body}"
    );
    let channels_item = r#"{"batch":[{"name":"e","channels":["bl"],"data":"x"}]}"#;
    let (status, body) = server.rest(
        "POST",
        &format!("/apps/{APP_ID}/batch_events"),
        &[],
        channels_item,
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("Missing required parameter: channel"),
        "{body}"
    );
    let big = "x".repeat(11 * 1024);
    let body = format!(r#"{{"batch":[{},{}]}}"#, item("ok"), item(&big));
    assert_eq!(
        server
            .rest("POST", &format!("/apps/{APP_ID}/batch_events"), &[], &body)
            .0,
        413
    );
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn publish_validation_statuses() {
    let server = Server::start();
    let p = events_path();
    let post = |body: &str| server.rest("POST", &p, &[], body).0;
    assert_eq!(post(r#"{"name":"e","channel":"x","data":"d"}"#), 200);
    assert_eq!(post(r#"{"name":"e","data":"d"}"#), 400, "no channel");
    assert_eq!(post(r#"{"channel":"x","data":"d"}"#), 400, "no name");
    assert_eq!(post(r#"{"name":"e","channel":"x"}"#), 400, "no data");
    assert_eq!(post("not json"), 400);
    let hundred: Vec<String> = (0..100).map(|i| format!("\"c{i}\"")).collect();
    let hundred_one: Vec<String> = (0..101).map(|i| format!("\"c{i}\"")).collect();
    assert_eq!(
        post(&format!(
            r#"{{"name":"e","channels":[{}],"data":"d"}}"#,
            hundred.join(",")
        )),
        200
    );
    assert_eq!(
        post(&format!(
            r#"{{"name":"e","channels":[{}],"data":"d"}}"#,
            hundred_one.join(",")
        )),
        400
    );
    assert_eq!(
        post(&format!(
            r#"{{"name":"e","channel":"x","data":"{}"}}"#,
            "a".repeat(10240)
        )),
        200
    );
    assert_eq!(
        post(&format!(
            r#"{{"name":"e","channel":"x","data":"{}"}}"#,
            "a".repeat(10241)
        )),
        413
    );
    assert_eq!(
        post(&format!(
            r#"{{"name":"{}","channel":"x","data":"d"}}"#,
            "n".repeat(200)
        )),
        200
    );
    assert_eq!(
        post(&format!(
            r#"{{"name":"{}","channel":"x","data":"d"}}"#,
            "n".repeat(201)
        )),
        400
    );
    assert_eq!(
        post(r#"{"name":"pusher:foo","channel":"x","data":"d"}"#),
        400
    );
    assert_eq!(
        post(r#"{"name":"e","channel":"x","data":"d","socket_id":"abc"}"#),
        400
    );
    assert_eq!(post(r#"{"name":"e","channel":"bad name","data":"d"}"#), 400);
    assert_eq!(
        post(r#"{"name":"e","channels":["a","private-encrypted-x"],"data":"d"}"#),
        400
    );
}

#[test]
fn signature_failures_are_401() {
    let server = Server::start();
    let p = events_path();
    let body = r#"{"name":"e","channel":"x","data":"d"}"#;
    let port = server.port;
    let post = |key: &str, secret: &str, ts: i64| {
        rest_signed(port, "POST", &p, &[], body, key, secret, ts).0
    };
    assert_eq!(post(APP_KEY, APP_SECRET, now()), 200);
    assert_eq!(post(APP_KEY, "wrong", now()), 401, "bad signature");
    assert_eq!(post("other-key", APP_SECRET, now()), 401, "unknown key");
    assert_eq!(post(APP_KEY, APP_SECRET, now() - 601), 401, "too old");
    assert_eq!(post(APP_KEY, APP_SECRET, now() + 601), 401, "too new");
    assert_eq!(
        post(APP_KEY, APP_SECRET, now() - 599),
        200,
        "inside the window"
    );
    // Stale body_md5: sign one body, send another of the same length.
    let q = relay::protocol::auth::sign_rest_query(
        "POST",
        &p,
        &[],
        body.as_bytes(),
        APP_KEY,
        APP_SECRET,
        now(),
    );
    let other = body.replace("\"d\"", "\"e\"");
    assert_eq!(http(port, "POST", &format!("{p}?{q}"), &other).0, 401);
    // No signature at all.
    let (status, resp) = http(port, "POST", &p, body);
    assert_eq!(status, 401);
    assert!(json(&resp)["error"].is_str());
    // A GET with the empty body's body_md5 (pusher-http-python) is accepted.
    let chan = format!("/apps/{APP_ID}/channels");
    let q = relay::protocol::auth::sign_rest_query(
        "GET",
        &chan,
        &[("body_md5", "d41d8cd98f00b204e9800998ecf8427e")],
        b"",
        APP_KEY,
        APP_SECRET,
        now(),
    );
    assert_eq!(http(port, "GET", &format!("{chan}?{q}"), "").0, 200);
}

#[test]
fn unknown_app_and_routes_are_404_and_wrong_methods_405() {
    let server = Server::start();
    let body = r#"{"name":"e","channel":"x","data":"d"}"#;
    assert_eq!(server.rest("POST", "/apps/999999/events", &[], body).0, 404);
    assert_eq!(
        server
            .rest("GET", &format!("/apps/{APP_ID}/nothing"), &[], "")
            .0,
        404
    );
    assert_eq!(server.rest("GET", &events_path(), &[], "").0, 405);
    assert_eq!(http(server.port, "GET", "/nope", "").0, 404);
}

#[test]
fn channel_queries_count_across_workers() {
    let server = Server::start();
    let mut clients: Vec<_> = (0..6).map(|_| server.client()).collect();
    for c in &mut clients {
        c.subscribe("q-one");
    }
    clients[0].subscribe("other");
    let chan = |name: &str, info: &str| {
        let extra: Vec<(&str, &str)> = if info.is_empty() {
            vec![]
        } else {
            vec![("info", info)]
        };
        server.rest(
            "GET",
            &format!("/apps/{APP_ID}/channels/{name}"),
            &extra,
            "",
        )
    };
    assert_eq!(
        chan("q-one", "subscription_count"),
        (200, r#"{"occupied":true,"subscription_count":6}"#.into())
    );
    assert_eq!(chan("empty", ""), (200, r#"{"occupied":false}"#.into()));
    assert_eq!(chan("q-one", "user_count").0, 400);
    let (status, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels"),
        &[("info", "subscription_count")],
        "",
    );
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(obj_keys(&v["channels"]), ["other", "q-one"]);
    assert_eq!(
        v["channels"]["q-one"]["subscription_count"].as_u64(),
        Some(6)
    );
    let (_, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels"),
        &[("filter_by_prefix", "q-")],
        "",
    );
    assert_eq!(body, r#"{"channels":{"q-one":{}}}"#);
    assert_eq!(
        server
            .rest(
                "GET",
                &format!("/apps/{APP_ID}/channels"),
                &[("filter_by_prefix", "private-"), ("info", "user_count")],
                ""
            )
            .0,
        400
    );
    let (_, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels/q-one/stats"),
        &[],
        "",
    );
    assert_eq!(body, r#"{"occupied":true,"connection_count":6}"#);
    // Leaving (unsubscribe or disconnect) is reflected.
    clients[1].send_text(r#"{"event":"pusher:unsubscribe","data":{"channel":"q-one"}}"#);
    clients.pop().unwrap().close_tcp();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        chan("q-one", "subscription_count").1,
        r#"{"occupied":true,"subscription_count":4}"#
    );
    // Publishing with info returns counts.
    let body =
        r#"{"name":"e","channels":["q-one","nobody"],"data":"d","info":"subscription_count"}"#;
    let (_, resp) = server.rest("POST", &events_path(), &[], body);
    assert_eq!(
        resp,
        r#"{"channels":{"q-one":{"subscription_count":4},"nobody":{"subscription_count":0}}}"#
    );
    let (_, empty) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels"),
        &[("filter_by_prefix", "zzz")],
        "",
    );
    assert_eq!(empty, r#"{"channels":{}}"#);
}

#[test]
fn deprecated_publish_answers_202_and_delivers() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("legacy");
    let path = format!("/apps/{APP_ID}/channels/legacy/events");
    let (status, body) = server.rest("POST", &path, &[("name", "old")], r#"{"x":1}"#);
    assert_eq!((status, body.as_str()), (202, ""));
    let e = c.expect_event("old");
    assert_eq!(e.data_str(), r#"{"x":1}"#);
}

#[test]
fn health_and_stats() {
    let server = Server::start();
    assert_eq!(
        http(server.port, "GET", "/health", ""),
        (200, r#"{"status":"ok"}"#.into())
    );
    let _c = server.client();
    let v = json(&http(server.port, "GET", "/stats", "").1);
    assert_eq!(v["connections"].as_u64(), Some(1));
    assert_eq!(v["channels"].as_u64(), Some(0));
}
