//! Webhooks over real sockets, with a real HTTP receiver (docs/protocol.md#webhooks): every kind signed in
//! Pusher's format, once per channel across cores, the debounce of a quick reconnect, retries of a failing
//! receiver with the same body, a hanging receiver that does not slow delivery, a receiver that is down losing
//! only what outlives the retry window, and a queue that stays bounded.

mod common;

use std::time::{Duration, Instant};

use common::receiver::{Answer, Receiver, describe, named};
use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

const ALL_KINDS: &str = "channel_occupied,channel_vacated,member_added,member_removed,client_event,cache_miss,subscription_count,user_online,user_offline";

/// A server whose default app sends webhooks to `url`, with a short debounce and batch window for tests.
fn server(url: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("RELAY_WEBHOOK_URL", url),
        ("RELAY_WEBHOOK_DEBOUNCE_MS", "300"),
        ("RELAY_WEBHOOK_BATCH_MS", "20"),
    ];
    all.extend_from_slice(env);
    Server::start_with(&[], &all)
}

fn count(events: &[Value], name: &str, channel: &str) -> usize {
    named(events, name, Some(channel)).len()
}

fn event_log(server: &Server) -> Vec<Value> {
    let (status, body) = server.rest(
        "GET",
        &format!("/apps/{APP_ID}/events/log"),
        &[("limit", "100")],
        "",
    );
    assert_eq!(status, 200, "{body}");
    json(&body)["events"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .collect()
}

#[test]
fn every_kind_arrives_signed_in_pushers_format() {
    let rx = Receiver::start();
    // A debounce long enough that both clients' cache misses fall in it on a loaded machine.
    let server = server(
        &rx.url(),
        &[
            ("RELAY_WEBHOOK_EVENTS", ALL_KINDS),
            ("RELAY_WEBHOOK_DEBOUNCE_MS", "2000"),
        ],
    );

    let mut a = server.client();
    let e = signin(&mut a, r#"{"id":"u1","user_info":{"name":"Ada"}}"#);
    assert_eq!(e.name(), "pusher:signin_success", "{}", e.raw);
    join(&mut a, "presence-room", "u1", None);
    let mut b = server.client();
    join(&mut b, "presence-room", "u2", Some(r#"{"name":"Bob"}"#));
    a.expect_event("pusher_internal:member_added");
    b.send_text(r#"{"event":"client-typing","channel":"presence-room","data":{"x":1}}"#);
    a.expect_event("client-typing");
    let mut c = server.client();
    c.subscribe("cache-news");
    c.expect_event("pusher:cache_miss");
    let mut d = server.client();
    d.subscribe("cache-news");
    d.expect_event("pusher:cache_miss");
    rx.wait_for(TIMEOUT, "the joins", |e| {
        named(e, "subscription_count", Some("cache-news")).len() == 2
            && named(e, "client_event", None).len() == 1
            && named(e, "member_added", None).len() == 2
    });
    a.close_tcp();
    b.close_tcp();
    c.close_tcp();
    d.close_tcp();
    let events = rx.wait_for(TIMEOUT, "the leaves", |e| {
        count(e, "channel_vacated", "presence-room") == 1
            && count(e, "channel_vacated", "cache-news") == 1
            && named(e, "user_offline", None).len() == 1
            && named(e, "member_removed", None).len() == 2
    });

    for hook in rx.hooks() {
        assert_eq!(hook.path, "/hooks");
        assert_eq!(hook.header("content-type"), Some("application/json"));
        assert_eq!(hook.header("x-pusher-key"), Some(APP_KEY));
        let signature = relay::protocol::auth::webhook_signature(APP_SECRET, &hook.body);
        assert_eq!(hook.header("x-pusher-signature"), Some(signature.as_str()));
        let time_ms = hook.json()["time_ms"]
            .as_u64()
            .expect("time_ms is an integer");
        let now_ms = (now() * 1000) as u64;
        assert!(
            time_ms <= now_ms + 1000 && time_ms + 60_000 > now_ms,
            "{time_ms}"
        );
    }

    let one = |name: &str, channel: Option<&str>| -> Value {
        let found = named(&events, name, channel);
        assert_eq!(found.len(), 1, "{name}: {}", describe(&events));
        found[0].clone()
    };
    one("channel_occupied", Some("presence-room"));
    one("channel_occupied", Some("cache-news"));
    one("cache_miss", Some("cache-news")); // two clients missed: one webhook
    let online = one("user_online", None);
    assert_eq!(online["user_id"].as_str(), Some("u1"));
    assert!(online.get("channel").is_none());
    let offline = one("user_offline", None);
    assert_eq!(offline["user_id"].as_str(), Some("u1"));
    let added: Vec<&str> = named(&events, "member_added", Some("presence-room"))
        .iter()
        .map(|e| e["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["u1", "u2"]);
    let client = one("client_event", Some("presence-room"));
    assert_eq!(client["event"].as_str(), Some("client-typing"));
    assert_eq!(
        client["data"].as_str(),
        Some(r#"{"x":1}"#),
        "data is the string relayed"
    );
    assert_eq!(client["socket_id"].as_str(), Some(b.socket_id.as_str()));
    assert_eq!(client["user_id"].as_str(), Some("u2"));
    let counts: Vec<u64> = named(&events, "subscription_count", Some("cache-news"))
        .iter()
        .map(|e| e["subscription_count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts,
        [1, 2, 1],
        "a vacated channel's count goes with channel_vacated"
    );
    assert!(
        named(&events, "subscription_count", Some("presence-room")).is_empty(),
        "presence channels have no subscription count"
    );

    let log = event_log(&server);
    let delivered = log
        .iter()
        .filter(|e| {
            e["type"].as_str() == Some("webhook") && e["result"].as_str() == Some("delivered")
        })
        .count();
    assert!(delivered >= 2, "the event log records deliveries: {log:?}");
}

#[test]
fn kinds_are_what_the_webhook_asks_for() {
    let rx = Receiver::start();
    let server = server(&rx.url(), &[("RELAY_WEBHOOK_EVENTS", "channel_vacated")]);
    let mut a = server.client();
    a.subscribe("only-vacated");
    let mut b = server.client();
    b.subscribe("cache-y");
    a.close_tcp();
    b.close_tcp();
    let events = rx.wait_for(TIMEOUT, "vacated", |e| {
        named(e, "channel_vacated", None).len() == 2
    });
    assert_eq!(
        events.len(),
        2,
        "only the kind asked for: {}",
        describe(&events)
    );
}

#[test]
fn occupied_and_vacated_come_once_for_subscribers_on_different_cores() {
    let rx = Receiver::start();
    let server = server(&rx.url(), &[]);
    let mut clients: Vec<Client> = (0..16).map(|_| server.client()).collect();
    let cores: std::collections::BTreeSet<u64> = clients
        .iter()
        .map(|c| {
            c.socket_id
                .split('.')
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                & 1023
        })
        .collect();
    assert_eq!(cores.len(), 2, "subscribers on both cores");
    for c in &mut clients {
        c.subscribe("room");
    }
    for c in clients.iter_mut().step_by(2) {
        c.close_tcp();
    }
    std::thread::sleep(Duration::from_millis(100));
    for c in clients.iter_mut().skip(1).step_by(2) {
        c.close_tcp();
    }
    let events = rx.wait_for(TIMEOUT, "vacated", |e| {
        count(e, "channel_vacated", "room") == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let events_later = rx.events();
    assert_eq!(
        events.len(),
        events_later.len(),
        "nothing after: {}",
        describe(&events_later)
    );
    assert_eq!(
        count(&events_later, "channel_occupied", "room"),
        1,
        "{}",
        describe(&events_later)
    );
    assert_eq!(count(&events_later, "channel_vacated", "room"), 1);
}

#[test]
fn a_reconnect_within_the_debounce_sends_neither_removed_nor_added() {
    let rx = Receiver::start();
    let server = server(
        &rx.url(),
        &[
            ("RELAY_WEBHOOK_DEBOUNCE_MS", "1500"),
            ("RELAY_WEBHOOK_EVENTS", ALL_KINDS),
        ],
    );
    let mut a = server.client();
    signin(&mut a, r#"{"id":"u1"}"#);
    join(&mut a, "presence-lobby", "u1", None);
    rx.wait_for(TIMEOUT, "the join", |e| {
        named(e, "member_added", None).len() == 1
    });
    a.close_tcp();
    let mut again = server.client();
    signin(&mut again, r#"{"id":"u1"}"#);
    join(&mut again, "presence-lobby", "u1", None);
    std::thread::sleep(Duration::from_millis(2500));
    let events = rx.events();
    let mut names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        ["channel_occupied", "member_added", "user_online"],
        "{}",
        describe(&events)
    );
    // Leaving for good is reported, after the debounce.
    again.close_tcp();
    let left = Instant::now();
    let events = rx.wait_for(Duration::from_secs(5), "the leave", |e| {
        named(e, "member_removed", None).len() == 1
            && named(e, "channel_vacated", None).len() == 1
            && named(e, "user_offline", None).len() == 1
    });
    assert!(
        left.elapsed() >= Duration::from_millis(1400),
        "held for the debounce"
    );
    assert_eq!(events.len(), 6, "{}", describe(&events));
}

#[test]
fn a_receiver_that_answers_503_gets_the_same_events_again() {
    let rx = Receiver::scripted(&[Answer::Status(503)], Answer::Status(200));
    let server = server(&rx.url(), &[]);
    let mut a = server.client();
    a.subscribe("retry-me");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx.hooks().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no retry: {:?}",
            rx.hooks().len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let hooks = rx.hooks();
    assert_eq!(hooks[0].body, hooks[1].body, "the same body");
    assert_eq!(
        hooks[0].header("x-pusher-signature"),
        hooks[1].header("x-pusher-signature")
    );
    let gap = hooks[1].at - hooks[0].at;
    assert!(
        gap >= Duration::from_millis(700),
        "backoff of about 1 s, got {gap:?}"
    );
    assert_eq!(count(&rx.events(), "channel_occupied", "retry-me"), 2);
    // The reports travel through the sender and a core's inbox: wait for both.
    let deadline = Instant::now() + Duration::from_secs(5);
    let results = loop {
        let results: Vec<String> = event_log(&server)
            .iter()
            .filter(|e| e["type"].as_str() == Some("webhook"))
            .map(|e| {
                format!(
                    "{}:{}",
                    e["attempt"].as_u64().unwrap(),
                    e["result"].as_str().unwrap()
                )
            })
            .collect();
        if results.len() >= 2 || Instant::now() > deadline {
            break results;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(results, ["2:delivered", "1:retrying"], "newest first");
}

#[test]
fn a_hanging_receiver_does_not_slow_delivery() {
    let rx = Receiver::scripted(&[], Answer::Hang);
    let server = server(&rx.url(), &[("RELAY_WEBHOOK_TIMEOUT", "60")]);
    let mut sub = server.client();
    sub.subscribe("live");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rx.hooks().is_empty() {
        assert!(Instant::now() < deadline, "the receiver got nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The receiver holds the one request in flight; channels come and go, subscribers get every event.
    for i in 0..200 {
        let mut other = server.client();
        other.subscribe(&format!("churn-{i}"));
        let (status, body) = server.publish("live", "tick", &i.to_string());
        assert_eq!(status, 200, "{body}");
        assert_eq!(sub.expect_event("tick").data_str(), i.to_string());
    }
    assert_eq!(rx.hooks().len(), 1, "still hanging on the first request");
    let (_, stats) = common::http(server.port, "GET", "/stats", "");
    let held = json(&stats)["webhooks"]["held"].as_u64().unwrap();
    assert!(held >= 200, "the events wait in the sender: {stats}");
}

#[test]
fn a_receiver_that_is_down_loses_only_what_exceeds_the_retry_window() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hooks");
    let server = server(&url, &[("RELAY_WEBHOOK_RETRY_WINDOW", "3")]);
    let mut a = server.client();
    a.subscribe("early");
    let dropped = |server: &Server| {
        event_log(server).iter().any(|e| {
            e["type"].as_str() == Some("webhook") && e["result"].as_str() == Some("dropped")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(8);
    while !dropped(&server) {
        assert!(
            Instant::now() < deadline,
            "the early event was never given up: {:?}",
            event_log(&server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut b = server.client();
    b.subscribe("late");
    std::thread::sleep(Duration::from_millis(300));
    let rx = Receiver::start_on(port);
    let events = rx.wait_for(Duration::from_secs(5), "the late event", |e| {
        count(e, "channel_occupied", "late") == 1
    });
    assert_eq!(
        count(&events, "channel_occupied", "early"),
        0,
        "{}",
        describe(&events)
    );
    let (_, stats) = common::http(server.port, "GET", "/stats", "");
    assert!(
        json(&stats)["webhooks"]["dropped"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

#[test]
fn the_queue_stays_bounded_when_the_receiver_hangs() {
    let rx = Receiver::scripted(&[], Answer::Hang);
    let server = server(
        &rx.url(),
        &[
            ("RELAY_WEBHOOK_TIMEOUT", "60"),
            ("RELAY_WEBHOOK_QUEUE_CAP", "200"),
        ],
    );
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut c = server.client();
        c.subscribe(&format!("storm-{i}"));
        clients.push(c);
    }
    drop(clients);
    // Once the vacated channels have left the debounce, at most the cap waits for the hanging receiver.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = common::http(server.port, "GET", "/stats", "");
        let w = &json(&stats)["webhooks"];
        if w["held"].as_u64().unwrap() <= 200 && w["dropped"].as_u64().unwrap() >= 1000 {
            assert!(w["held"].as_u64().unwrap() > 0, "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "never bounded: {stats}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.log().contains("webhooks"),
        "a summary names the loss"
    );
}

#[test]
fn a_drain_flushes_what_is_held() {
    let rx = Receiver::start();
    // A debounce far longer than the test: only the drain's flush can send the vacated channel.
    let mut server = server(&rx.url(), &[("RELAY_WEBHOOK_DEBOUNCE_MS", "60000")]);
    let mut a = server.client();
    a.subscribe("until-the-end");
    rx.wait_for(TIMEOUT, "occupied", |e| {
        count(e, "channel_occupied", "until-the-end") == 1
    });
    a.close_tcp();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        count(&rx.events(), "channel_vacated", "until-the-end"),
        0,
        "held"
    );
    assert!(server.terminate().success());
    assert_eq!(
        count(&rx.events(), "channel_vacated", "until-the-end"),
        1,
        "sent before exit"
    );
}

#[test]
fn a_refusal_is_final_and_summarised() {
    let rx = Receiver::scripted(&[], Answer::Status(404));
    let server = server(&rx.url(), &[]);
    let mut a = server.client();
    a.subscribe("refused");
    let mut b = server.client();
    std::thread::sleep(Duration::from_millis(100));
    b.subscribe("refused-too");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log().contains("last refusal") {
        assert!(Instant::now() < deadline, "no summary: {}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let hooks = rx.hooks().len();
    assert!((1..=2).contains(&hooks), "each batch tried once: {hooks}");
    let summaries = server.log().matches("webhooks:").count();
    assert_eq!(
        summaries,
        1,
        "one summary line, not one per batch: {}",
        server.log()
    );
}
