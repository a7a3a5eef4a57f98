//! Private, presence, cache channels, client events and user authentication over real sockets
//! (docs/protocol.md#channel-authorization to #subscription-count; checklist 25–64).

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

#[test]
fn presence_roster_member_events_and_counts() {
    let server = Server::start();
    let mut a = server.client();
    let e = join(&mut a, "presence-room", "42", Some(r#"{"name":"Ada"}"#));
    assert_eq!(
        e.data_str(),
        r#"{"presence":{"ids":["42"],"hash":{"42":{"name":"Ada"}},"count":1}}"#
    );

    let mut b = server.client();
    let e = join(&mut b, "presence-room", "7", None);
    let p = e.data_json();
    assert_eq!(p["presence"]["count"].as_u64(), Some(2));
    assert!(
        p["presence"]["hash"]["7"].is_null(),
        "member without user_info maps to null: {}",
        e.raw
    );
    let added = a.expect_event("pusher_internal:member_added");
    assert_eq!(added.data_str(), r#"{"user_id":"7","user_info":null}"#);
    b.expect_silence(Duration::from_millis(200));

    // User 42 again from another socket: nobody is told, counts stay.
    let mut a2 = server.client();
    let e = join(&mut a2, "presence-room", "42", Some(r#"{"name":"Ada"}"#));
    assert_eq!(e.data_json()["presence"]["count"].as_u64(), Some(2));
    a.expect_silence(Duration::from_millis(200));
    b.expect_silence(Duration::from_millis(10));
    let path = format!("/apps/{APP_ID}/channels/presence-room");
    let (_, body) = server.rest(
        "GET",
        &path,
        &[("info", "user_count,subscription_count")],
        "",
    );
    assert_eq!(
        body,
        r#"{"occupied":true,"user_count":2,"subscription_count":3}"#
    );
    let (_, body) = server.rest("GET", &format!("{path}/users"), &[], "");
    let users = json(&body);
    let mut ids: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["42", "7"]);

    // One of 42's sockets leaves: no member_removed; the last one (disconnect): member_removed.
    a2.send_text(r#"{"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}"#);
    b.expect_silence(Duration::from_millis(300));
    a.close_tcp();
    let removed = b.expect_event("pusher_internal:member_removed");
    assert_eq!(removed.data_str(), r#"{"user_id":"42"}"#);
}

#[test]
fn presence_refusals() {
    let server = with_app("presence", r#""max_presence_members":2"#);
    let mut c = server.client();
    // Bad signature, not signed in without channel_data, malformed channel_data, oversized info.
    c.send_text(&sub_msg(
        "presence-x",
        "app-key:00",
        Some(r#"{"user_id":"1"}"#),
    ));
    c.expect_event("pusher:error");
    let auth =
        relay::protocol::auth::sign_channel(APP_KEY, APP_SECRET, &c.socket_id, "presence-x", None);
    c.send_text(&sub_msg("presence-x", &auth, None));
    c.expect_event("pusher:error");
    let big = format!(r#"{{"user_id":"1","user_info":"{}"}}"#, "x".repeat(1100));
    let auth = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        &c.socket_id,
        "presence-x",
        Some(&big),
    );
    c.send_text(&sub_msg("presence-x", &auth, Some(&big)));
    c.expect_event("pusher:error");
    // Numeric user ids become strings.
    let data = r#"{"user_id":10}"#;
    let auth = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        &c.socket_id,
        "presence-x",
        Some(data),
    );
    c.send_text(&sub_msg("presence-x", &auth, Some(data)));
    let e = c.expect_event("pusher_internal:subscription_succeeded");
    assert_eq!(e.data_json()["presence"]["ids"][0].as_str(), Some("10"));
    // Member limit 2: a third distinct user is refused, another connection of a present user is not.
    let mut d = server.client();
    join(&mut d, "presence-x", "11", None);
    let mut e3 = server.client();
    let data = r#"{"user_id":"12"}"#;
    let auth = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        &e3.socket_id,
        "presence-x",
        Some(data),
    );
    e3.send_text(&sub_msg("presence-x", &auth, Some(data)));
    e3.expect_event("pusher:error");
    let mut f = server.client();
    join(&mut f, "presence-x", "11", None);
}

/// A server whose one app has the default credentials plus the `extra` JSON fields.
fn with_app(tag: &str, extra: &str) -> Server {
    Server::start_with(&["--apps-file", &apps_file(tag, extra)], &[])
}

fn apps_file(tag: &str, extra: &str) -> String {
    let dir = std::env::temp_dir().join(format!("relay-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("apps.json");
    std::fs::write(
        &file,
        format!(r#"{{"apps":[{{"id":"app-id","key":"app-key","secret":"app-secret",{extra}}}]}}"#),
    )
    .unwrap();
    file.to_str().unwrap().to_string()
}

#[test]
fn presence_rosters_stay_exact_under_concurrent_join_and_leave() {
    let server = with_app("churn", r#""max_presence_members":1000"#);
    let mut observer = server.client();
    join(&mut observer, "presence-churn", "observer", None);
    // 1,000 connections (500 users, two connections each) join from several threads at once, then half the
    // users leave while the others are still joining.
    let port = server.port;
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let srv = ServerRef { port };
                let mut kept = Vec::new();
                for i in 0..250 {
                    let user = format!("u{}", (t * 250 + i) / 2);
                    let mut c = srv.client();
                    join(&mut c, "presence-churn", &user, None);
                    kept.push((user, c));
                }
                // Users with an even number leave entirely (both their connections).
                kept.retain(|(u, _)| u[1..].parse::<u32>().unwrap() % 2 == 1);
                kept
            })
        })
        .collect();
    let kept: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let path = format!("/apps/{APP_ID}/channels/presence-churn");
    let (_, body) = server.rest(
        "GET",
        &path,
        &[("info", "user_count,subscription_count")],
        "",
    );
    assert_eq!(
        body,
        format!(
            r#"{{"occupied":true,"user_count":251,"subscription_count":{}}}"#,
            kept.len() + 1
        )
    );
    // The observer saw every user arrive once and every leaver leave once.
    let mut added = std::collections::HashSet::new();
    let mut removed = std::collections::HashSet::new();
    while let Some(e) = observer.try_recv_event(Duration::from_millis(300)) {
        let u = e.data_json()["user_id"].as_str().unwrap().to_string();
        match e.name() {
            "pusher_internal:member_added" => assert!(added.insert(u), "duplicate member_added"),
            "pusher_internal:member_removed" => {
                assert!(removed.insert(u), "duplicate member_removed")
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(added.len(), 500);
    assert_eq!(removed.len(), 250);
    drop(kept);
}

/// A server handle for threads (only the port is needed to connect).
struct ServerRef {
    port: u16,
}

impl ServerRef {
    fn client(&self) -> Client {
        let mut ws = Ws::connect(self.port, &format!("/app/{APP_KEY}?protocol=7"));
        let ev = ws.expect_event("pusher:connection_established");
        let socket_id = ev.data_json()["socket_id"].as_str().unwrap().to_string();
        Client { ws, socket_id }
    }
}

#[test]
fn client_events_rules() {
    let server = Server::start();
    let mut a = server.client();
    let mut b = server.client();
    private_sub(&mut a, "private-chat");
    private_sub(&mut b, "private-chat");
    a.send_text(r#"{"event":"client-typing","channel":"private-chat","data":{"x":1}}"#);
    let e = b.expect_event("client-typing");
    assert_eq!(
        e.raw,
        r#"{"event":"client-typing","channel":"private-chat","data":"{\"x\":1}"}"#
    );
    a.expect_silence(Duration::from_millis(200));
    a.send_text(r#"{"event":"client-s","channel":"private-chat","data":"hello"}"#);
    assert_eq!(b.expect_event("client-s").data_str(), "hello");

    // Public channel, not subscribed, oversized: refused and not delivered.
    a.subscribe("public-x");
    b.subscribe("public-x");
    a.send_text(r#"{"event":"client-x","channel":"public-x","data":{}}"#);
    a.expect_event("pusher:error");
    a.send_text(r#"{"event":"client-x","channel":"private-other","data":{}}"#);
    a.expect_event("pusher:error");
    let big = format!(
        r#"{{"event":"client-x","channel":"private-chat","data":"{}"}}"#,
        "x".repeat(10241)
    );
    a.send_text(&big);
    a.expect_event("pusher:error");
    b.expect_silence(Duration::from_millis(200));

    // Presence client events carry the sender's user_id.
    let mut p = server.client();
    let mut q = server.client();
    join(&mut p, "presence-c", "42", None);
    join(&mut q, "presence-c", "7", None);
    p.expect_event("pusher_internal:member_added");
    p.send_text(r#"{"event":"client-hi","channel":"presence-c","data":{}}"#);
    let e = q.expect_event("client-hi");
    assert_eq!(e.value["user_id"].as_str(), Some("42"));
}

#[test]
fn client_event_rate_limit_is_10_per_second() {
    let server = Server::start();
    let mut a = server.client();
    let mut b = server.client();
    private_sub(&mut a, "private-rate");
    private_sub(&mut b, "private-rate");
    for i in 0..11 {
        a.send_text(&format!(
            r#"{{"event":"client-n","channel":"private-rate","data":"{i}"}}"#
        ));
    }
    let e = a.expect_event("pusher:error");
    assert_eq!(e.value["data"]["code"].as_u64(), Some(4301));
    for i in 0..10 {
        assert_eq!(b.expect_event("client-n").data_str(), i.to_string());
    }
    b.expect_silence(Duration::from_millis(200));
    // The connection stays open.
    a.send_text(r#"{"event":"pusher:ping"}"#);
    a.expect_event("pusher:pong");
}

#[test]
fn client_events_can_be_switched_off_per_app() {
    let server = Server::start_with(&[], &[("RELAY_CLIENT_EVENTS", "false")]);
    let mut a = server.client();
    let mut b = server.client();
    private_sub(&mut a, "private-off");
    private_sub(&mut b, "private-off");
    a.send_text(r#"{"event":"client-x","channel":"private-off","data":{}}"#);
    a.expect_event("pusher:error");
    b.expect_silence(Duration::from_millis(200));
}

#[test]
fn cache_channels_replay_the_last_event_or_miss() {
    let server = Server::start();
    assert_eq!(server.publish("cache-x", "ev1", "first").0, 200);
    assert_eq!(server.publish("cache-x", "ev2", "second").0, 200);
    let mut c = server.client();
    c.subscribe("cache-x");
    let e = c.expect_event("ev2");
    assert_eq!((e.channel(), e.data_str()), (Some("cache-x"), "second"));
    c.subscribe("cache-empty");
    let e = c.expect_event("pusher:cache_miss");
    assert_eq!(e.channel(), Some("cache-empty"));
    let (_, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels/cache-x"),
        &[("info", "cache")],
        "",
    );
    let v = json(&body);
    assert_eq!(v["cache"]["data"].as_str(), Some("second"));
    let ttl = v["cache"]["ttl"].as_u64().unwrap();
    assert!(ttl > 0 && ttl <= 1800, "{body}");
    let (_, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels/cache-empty"),
        &[("info", "cache")],
        "",
    );
    assert!(body.contains(r#""cache":null"#), "{body}");
    // Client events are never cached.
    let mut a = server.client();
    private_sub(&mut a, "private-cache-y");
    a.send_text(r#"{"event":"client-z","channel":"private-cache-y","data":{}}"#);
    let mut late = server.client();
    private_sub(&mut late, "private-cache-y");
    // The client event may still be on its way to late's core when late subscribes, and then reaches it live
    // (before or after the miss); a cached one would come instead of the miss, which must arrive.
    let mut e = late.recv_event();
    if e.name() == "client-z" {
        e = late.recv_event();
    }
    assert_eq!(e.name(), "pusher:cache_miss", "{}", e.raw);
}

#[test]
fn cache_ttl_expires() {
    let server = with_app("ttl", r#""cache_ttl_secs":1"#);
    server.publish("cache-t", "ev", "d");
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = server.client();
    c.subscribe("cache-t");
    c.expect_event("pusher:cache_miss");
}

#[test]
fn signin_server_to_user_and_terminate() {
    let server = Server::start();
    let mut a = server.client();
    let user_data = r#"{"id":"42","user_info":{"name":"Ada"}}"#;
    let e = signin(&mut a, user_data);
    assert_eq!(e.name(), "pusher:signin_success");
    assert_eq!(e.value["data"]["user_data"].as_str(), Some(user_data));
    // Same id again is fine, a different id is refused.
    assert_eq!(signin(&mut a, user_data).name(), "pusher:signin_success");
    let e = signin(&mut a, r#"{"id":"43"}"#);
    assert_eq!(e.name(), "pusher:error");
    // Bad signature.
    let mut bad = server.client();
    bad.send_text(
        r#"{"event":"pusher:signin","data":{"auth":"app-key:00","user_data":"{\"id\":\"42\"}"}}"#,
    );
    bad.expect_event("pusher:error");
    // Server-to-user: only the signed-in socket may subscribe, and a REST publish reaches it.
    a.subscribe("#server-to-user-42");
    bad.send_text(
        r##"{"event":"pusher:subscribe","data":{"auth":"","channel":"#server-to-user-42"}}"##,
    );
    bad.expect_event("pusher:error");
    let mut a2 = server.client();
    signin(&mut a2, user_data);
    a2.subscribe("#server-to-user-42");
    let body = r##"{"name":"note","channel":"#server-to-user-42","data":"hi"}"##;
    assert_eq!(
        server
            .rest("POST", &format!("/apps/{APP_ID}/events"), &[], body)
            .0,
        200
    );
    assert_eq!(a.expect_event("note").channel(), Some("#server-to-user-42"));
    a2.expect_event("note");
    bad.expect_silence(Duration::from_millis(200));
    // A presence member who is not signed in as 42 is not terminated.
    let mut p = server.client();
    join(&mut p, "presence-t", "42", None);
    let (status, body) = server.rest(
        "POST",
        &format!("/apps/{APP_ID}/users/42/terminate_connections"),
        &[],
        "{}",
    );
    assert_eq!((status, body.as_str()), (200, "{}"));
    for c in [&mut a, &mut a2] {
        let (code, events) = c.expect_close();
        assert_eq!(code, Some(4009));
        assert!(events.iter().any(|e| e.name() == "pusher:error"));
    }
    p.send_text(r#"{"event":"pusher:ping"}"#);
    p.expect_event("pusher:pong");
}

#[test]
fn presence_without_channel_data_uses_the_signed_in_user() {
    let server = Server::start();
    let mut c = server.client();
    signin(&mut c, r#"{"id":"42","user_info":{"name":"Ada"}}"#);
    let auth =
        relay::protocol::auth::sign_channel(APP_KEY, APP_SECRET, &c.socket_id, "presence-s", None);
    c.send_text(&sub_msg("presence-s", &auth, None));
    let e = c.expect_event("pusher_internal:subscription_succeeded");
    assert_eq!(
        e.data_str(),
        r#"{"presence":{"ids":["42"],"hash":{"42":{"name":"Ada"}},"count":1}}"#
    );
}

#[test]
fn watchlist_online_and_offline() {
    let server = Server::start();
    let mut nine = server.client();
    signin(&mut nine, r#"{"id":"9"}"#);
    let mut watcher = server.client();
    let e = signin(&mut watcher, r#"{"id":"42","watchlist":["7","9"]}"#);
    assert_eq!(e.name(), "pusher:signin_success");
    let e = watcher.expect_event("pusher_internal:watchlist_events");
    assert!(e.value.get("channel").is_none());
    assert_eq!(
        sonic_rs::to_string(&e.value["data"]).unwrap(),
        r#"{"events":[{"name":"online","user_ids":["9"]},{"name":"offline","user_ids":["7"]}]}"#
    );
    let mut seven = server.client();
    signin(&mut seven, r#"{"id":"7"}"#);
    let e = watcher.expect_event("pusher_internal:watchlist_events");
    assert_eq!(
        sonic_rs::to_string(&e.value["data"]).unwrap(),
        r#"{"events":[{"name":"online","user_ids":["7"]}]}"#
    );
    seven.close_tcp();
    let e = watcher.expect_event("pusher_internal:watchlist_events");
    assert_eq!(
        sonic_rs::to_string(&e.value["data"]).unwrap(),
        r#"{"events":[{"name":"offline","user_ids":["7"]}]}"#
    );
}

#[test]
fn watchlist_over_limit_gets_4302() {
    let server = Server::start();
    let mut c = server.client();
    let ids: Vec<String> = (0..101).map(|i| format!("\"w{i}\"")).collect();
    let e = signin(
        &mut c,
        &format!(r#"{{"id":"1","watchlist":[{}]}}"#, ids.join(",")),
    );
    assert_eq!(e.name(), "pusher:signin_success");
    let e = c.expect_event("pusher:error");
    assert_eq!(e.value["data"]["code"].as_u64(), Some(4302));
}

#[test]
fn authorized_connections_mode_closes_idle_unauthenticated_connections() {
    let server = Server::start_with(
        &[
            "--apps-file",
            &apps_file("authz", r#""authorized_connections":true"#),
            "--authorized-connection-timeout",
            "1",
        ],
        &[],
    );
    let mut idle = server.client();
    let mut good = server.client();
    signin(&mut good, r#"{"id":"5"}"#);
    let (code, events) = idle.expect_close();
    assert_eq!(code, Some(4009));
    assert_eq!(events[0].value["data"]["code"].as_u64(), Some(4009));
    std::thread::sleep(Duration::from_millis(500));
    good.send_text(r#"{"event":"pusher:ping"}"#);
    good.expect_event("pusher:pong");
}

#[test]
fn subscription_count_events_when_enabled() {
    let server = Server::start_with(&[], &[("RELAY_SUBSCRIPTION_COUNT", "true")]);
    let mut a = server.client();
    a.subscribe("counted");
    let e = a.expect_event("pusher_internal:subscription_count");
    assert_eq!(e.data_str(), r#"{"subscription_count":1}"#);
    let mut b = server.client();
    b.subscribe("counted");
    assert_eq!(
        a.expect_event("pusher_internal:subscription_count")
            .data_str(),
        r#"{"subscription_count":2}"#
    );
    b.expect_event("pusher_internal:subscription_count");
    b.send_text(r#"{"event":"pusher:unsubscribe","data":{"channel":"counted"}}"#);
    assert_eq!(
        a.expect_event("pusher_internal:subscription_count")
            .data_str(),
        r#"{"subscription_count":1}"#
    );
    // Not for presence channels.
    join(&mut a, "presence-nocount", "1", None);
    a.expect_silence(Duration::from_millis(300));
}

#[test]
fn auth_endpoint_signs_for_backends() {
    let server = Server::start();
    let path = format!("/apps/{APP_ID}/auth");
    let (status, body) = server.rest(
        "POST",
        &path,
        &[],
        r#"{"socket_id":"1234.5678","channel_name":"private-orders"}"#,
    );
    assert_eq!(status, 200);
    let expect = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        "1234.5678",
        "private-orders",
        None,
    );
    assert_eq!(json(&body)["auth"].as_str(), Some(expect.as_str()));
    let data = r#"{"user_id":"42"}"#;
    let req = format!(
        r#"{{"socket_id":"1234.5678","channel_name":"presence-r","channel_data":{}}}"#,
        sonic_rs::to_string(data).unwrap()
    );
    let (status, body) = server.rest("POST", &path, &[], &req);
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["channel_data"].as_str(), Some(data));
    let expect = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        "1234.5678",
        "presence-r",
        Some(data),
    );
    assert_eq!(v["auth"].as_str(), Some(expect.as_str()));
    assert_eq!(
        server
            .rest(
                "POST",
                &path,
                &[],
                r#"{"socket_id":"x","channel_name":"private-a"}"#
            )
            .0,
        400
    );
    assert_eq!(
        server
            .rest(
                "POST",
                &path,
                &[],
                r#"{"socket_id":"1.2","channel_name":"public"}"#
            )
            .0,
        400
    );
    assert_eq!(http(server.port, "POST", &path, "{}").0, 401, "unsigned");
}

#[test]
fn rest_user_queries_on_non_presence_channels_are_400() {
    let server = Server::start();
    assert_eq!(
        server
            .rest(
                "GET",
                &format!("/apps/{APP_ID}/channels/my-channel/users"),
                &[],
                ""
            )
            .0,
        400
    );
    let (status, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels/presence-empty/users"),
        &[],
        "",
    );
    assert_eq!((status, body.as_str()), (200, r#"{"users":[]}"#));
    let mut c = server.client();
    join(&mut c, "presence-list", "1", None);
    let (status, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels"),
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        "",
    );
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"channels":{"presence-list":{"user_count":1}}}"#)
    );
    let body = r#"{"name":"e","channels":["presence-list"],"data":"d","info":"user_count,subscription_count"}"#;
    let (_, resp) = server.rest("POST", &format!("/apps/{APP_ID}/events"), &[], body);
    assert_eq!(
        resp,
        r#"{"channels":{"presence-list":{"user_count":1,"subscription_count":1}}}"#
    );
    let _ = c.recv_event();
}

#[test]
fn channels_per_connection_are_limited() {
    let server = with_app("chanlimit", r#""max_channels_per_connection":3"#);
    let mut c = server.client();
    for ch in ["a", "b", "c"] {
        c.subscribe(ch);
    }
    c.send_text(r#"{"event":"pusher:subscribe","data":{"channel":"d"}}"#);
    let e = c.expect_event("pusher:error");
    assert!(
        e.value["data"]["message"]
            .as_str()
            .unwrap()
            .contains("over 3 channels"),
        "{}",
        e.raw
    );
    c.send_text(r#"{"event":"pusher:unsubscribe","data":{"channel":"a"}}"#);
    c.subscribe("d");
}

/// The compressed pass (`RELAY_TEST_DEFLATE=1`, scripts/test) must compress: channel events reach its clients with
/// RSV1 set and are inflated; in the plain pass nothing arrives compressed (a stray RSV1 frame fails the read).
#[test]
fn channel_events_arrive_compressed_exactly_when_the_pass_negotiates_it() {
    let server = Server::start();
    let mut sub = server.client();
    sub.subscribe("zipped");
    let data = "{\"orders\":[".to_string() + &"{\"side\":\"buy\",\"qty\":1},".repeat(30) + "{}]}";
    assert_eq!(server.publish("zipped", "orders", &data).0, 200);
    let e = sub.expect_event("orders");
    assert_eq!(e.data_str(), data);
    assert_eq!(
        sub.inflated() > 0,
        deflate_everywhere(),
        "{} inflated",
        sub.inflated()
    );
}
