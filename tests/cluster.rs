//! A cluster over a real Redis (docs/protocol.md#cluster): every test starts its own `redis-server` on a free
//! port and two or three relay nodes. Publishes and batches on one node reach subscribers on the others once,
//! with socket exclusion; client events cross nodes; a node listens in Redis only to the channels it has
//! subscribers for; publishes made while Redis is down are delivered when it is back.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sonic_rs::JsonValueTrait;

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server not found: scripts/test installs it (Debian package redis-server)",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    /// A `redis-server` that speaks TLS only, with a certificate for `localhost` from a CA made for the test
    /// (its `ca.pem` is in `dir`).
    fn start_tls(dir: &std::path::Path) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(ok.success(), "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=relay test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// How many nodes listen to the Redis channel of `channel` (of the default app).
    fn listeners(&self, channel: &str) -> i64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let key = format!("{{relay}}:{APP_ID}:c:{channel}");
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&key)
            .query(&mut con)
            .unwrap();
        counts[0].1
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node(redis: &Redis, id: &str) -> Server {
    Server::start_with(
        &[],
        &[("RELAY_REDIS_URL", &redis.url()), ("RELAY_NODE_ID", id)],
    )
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_publish_on_one_node_reaches_every_subscriber_once() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut on_a = a.client();
    on_a.subscribe("news");
    let mut on_b = b.client();
    on_b.subscribe("news");
    let (status, body) = b.publish("news", "hello", r#"{"n":1}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(on_a.expect_event("hello").data_str(), r#"{"n":1}"#);
    assert_eq!(on_b.expect_event("hello").data_str(), r#"{"n":1}"#);
    // A batch from the other side, two channels.
    let mut sport = b.client();
    sport.subscribe("sport");
    let batch = r#"{"batch":[{"name":"b1","channel":"news","data":"x"},{"name":"b2","channel":"sport","data":"y"}]}"#;
    let (status, body) = a.rest("POST", &format!("/apps/{APP_ID}/batch_events"), &[], batch);
    assert_eq!(status, 200, "{body}");
    assert_eq!(on_a.expect_event("b1").data_str(), "x");
    assert_eq!(on_b.expect_event("b1").data_str(), "x");
    assert_eq!(sport.expect_event("b2").data_str(), "y");
    // Nothing twice: the origin ignores its own publication when Redis hands it back.
    on_a.expect_silence(Duration::from_millis(300));
    on_b.expect_silence(Duration::from_millis(10));
}

#[test]
fn the_excluded_socket_is_left_out_on_every_node() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut sender = a.client();
    sender.subscribe("room");
    let mut other = a.client();
    other.subscribe("room");
    let body = format!(
        r#"{{"name":"ev","channel":"room","data":"d","socket_id":"{}"}}"#,
        sender.socket_id
    );
    let (status, _) = b.rest("POST", &format!("/apps/{APP_ID}/events"), &[], &body);
    assert_eq!(status, 200);
    assert_eq!(other.expect_event("ev").data_str(), "d");
    sender.expect_silence(Duration::from_millis(300));
}

#[test]
fn client_events_cross_nodes_and_are_not_echoed() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut on_a = a.client();
    private_sub(&mut on_a, "private-chat");
    let mut on_b = b.client();
    private_sub(&mut on_b, "private-chat");
    on_a.send_text(r#"{"event":"client-typing","channel":"private-chat","data":{"who":"a"}}"#);
    assert_eq!(
        on_b.expect_event("client-typing").data_str(),
        r#"{"who":"a"}"#
    );
    on_a.expect_silence(Duration::from_millis(300));
}

#[test]
fn a_node_listens_only_to_channels_it_has_subscribers_for() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let c = node(&redis, "c");
    let mut on_a = a.client();
    on_a.subscribe("only-a");
    assert_eq!(
        redis.listeners("only-a"),
        1,
        "confirmed before subscription_succeeded"
    );
    assert_eq!(redis.listeners("nobody"), 0);
    let mut on_b = b.client();
    on_b.subscribe("only-a");
    assert_eq!(redis.listeners("only-a"), 2, "one per interested node");
    // A publish on the node with no subscriber: one copy to each interested node.
    let (status, _) = c.publish("only-a", "ev", "1");
    assert_eq!(status, 200);
    on_a.expect_event("ev");
    on_b.expect_event("ev");
    on_b.close_tcp();
    eventually(
        "b leaving the channel in Redis",
        Duration::from_secs(5),
        || redis.listeners("only-a") == 1,
    );
    let (status, _) = c.publish("only-a", "ev", "2");
    assert_eq!(status, 200);
    assert_eq!(on_a.expect_event("ev").data_str(), "2");
}

#[test]
fn publishes_during_a_redis_outage_arrive_when_it_is_back() {
    let mut redis = Redis::start();
    let port = redis.port;
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut on_a = a.client();
    on_a.subscribe("resilient");
    let mut local_b = b.client();
    local_b.subscribe("resilient");
    let mut member = a.client();
    join(&mut member, "presence-kept", "u1", None);
    redis.stop();
    // Each node goes on serving its own clients.
    let (status, body) = b.publish("resilient", "during", "1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(local_b.expect_event("during").data_str(), "1");
    std::thread::sleep(Duration::from_millis(500));
    let redis = Redis::start_on(port);
    // The held publication is sent once the nodes had time to listen again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        if let Some(e) = on_a.try_recv_event(Duration::from_millis(200)) {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the held publication never arrived"
        );
    };
    assert_eq!((got.name(), got.data_str()), ("during", "1"));
    assert_eq!(redis.listeners("resilient"), 2, "both nodes listen again");
    let (status, _) = b.publish("resilient", "after", "2");
    assert_eq!(status, 200);
    assert_eq!(on_a.expect_event("after").data_str(), "2");
    assert!(a.log().contains("reconnected"), "{}", a.log());
    // Redis came back empty: node a wrote its presence entries again.
    let mut joiner = b.client();
    let e = join(&mut joiner, "presence-kept", "u2", None);
    assert_eq!(roster(&e), ["u1", "u2"]);
}

fn node_with(redis: &Redis, id: &str, env: &[(&str, &str)]) -> Server {
    let url = redis.url();
    let mut all = vec![("RELAY_REDIS_URL", url.as_str()), ("RELAY_NODE_ID", id)];
    all.extend_from_slice(env);
    Server::start_with(&[], &all)
}

/// The user ids of a `subscription_succeeded` roster, sorted.
fn roster(e: &Event) -> Vec<String> {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    let mut ids: Vec<String> = e.data_json()["presence"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn member_of(e: &Event) -> String {
    use sonic_rs::JsonValueTrait;
    e.data_json()["user_id"].as_str().unwrap().to_string()
}

#[test]
fn presence_rosters_and_member_events_are_the_clusters() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut u1_a = a.client();
    let e = join(&mut u1_a, "presence-room", "u1", Some(r#"{"name":"Ada"}"#));
    assert_eq!(roster(&e), ["u1"]);
    let mut u2_b = b.client();
    let e = join(&mut u2_b, "presence-room", "u2", None);
    assert_eq!(
        roster(&e),
        ["u1", "u2"],
        "the roster spans the nodes: {}",
        e.raw
    );
    assert!(
        e.raw.contains(r#"\"u1\":{\"name\":\"Ada\"}"#),
        "user_info from the other node: {}",
        e.raw
    );
    let added = u1_a.expect_event("pusher_internal:member_added");
    assert_eq!(member_of(&added), "u2");
    // u1's second connection, on the other node: a member already, nobody is told.
    let mut u1_b = b.client();
    let e = join(&mut u1_b, "presence-room", "u1", Some(r#"{"name":"Ada"}"#));
    assert_eq!(roster(&e), ["u1", "u2"]);
    u2_b.expect_silence(Duration::from_millis(300));
    u1_a.expect_silence(Duration::from_millis(10));
    // u1 leaves node a: still on node b, nobody is told.
    u1_a.close_tcp();
    u2_b.expect_silence(Duration::from_millis(500));
    // u1 leaves node b too: gone from the cluster, once.
    u1_b.close_tcp();
    let removed = u2_b.expect_event("pusher_internal:member_removed");
    assert_eq!(member_of(&removed), "u1");
    u2_b.expect_silence(Duration::from_millis(300));
    let mut late = a.client();
    let e = join(&mut late, "presence-room", "u3", None);
    assert_eq!(roster(&e), ["u2", "u3"]);
    assert_eq!(
        member_of(&u2_b.expect_event("pusher_internal:member_added")),
        "u3"
    );
}

#[test]
fn a_dead_nodes_members_are_removed_within_the_node_timeout() {
    let redis = Redis::start();
    let timeout = [("RELAY_CLUSTER_NODE_TIMEOUT", "2")];
    let mut a = node_with(&redis, "a", &timeout);
    let b = node_with(&redis, "b", &timeout);
    let mut u1 = a.client();
    join(&mut u1, "presence-lobby", "u1", None);
    let mut u2 = b.client();
    let e = join(&mut u2, "presence-lobby", "u2", None);
    assert_eq!(roster(&e), ["u1", "u2"]);
    let killed = Instant::now();
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    let removed = loop {
        if let Some(e) = u2.try_recv_event(Duration::from_millis(200)) {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "u1 was never removed: {}",
            b.log()
        );
    };
    assert_eq!(removed.name(), "pusher_internal:member_removed");
    assert_eq!(member_of(&removed), "u1");
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "{:?}",
        killed.elapsed()
    );
    u2.expect_silence(Duration::from_millis(500));
    let mut u3 = b.client();
    let e = join(&mut u3, "presence-lobby", "u3", None);
    assert_eq!(roster(&e), ["u2", "u3"], "no ghost of the dead node");
    assert!(b.log().contains("stopped beating"), "{}", b.log());
}

#[test]
fn rest_queries_are_answered_for_the_cluster() {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut on_a = a.client();
    on_a.subscribe("only-on-a");
    let mut member = a.client();
    join(&mut member, "presence-q", "u1", None);
    let get = |path: &str, query: &[(&str, &str)]| {
        let (status, body) = b.rest("GET", &format!("/apps/{APP_ID}{path}"), query, "");
        assert_eq!(status, 200, "{path}: {body}");
        json(&body)
    };
    // Occupancy reaches Redis a moment after the subscriptions.
    eventually(
        "node b listing node a's channels",
        Duration::from_secs(5),
        || obj_keys(&get("/channels", &[])["channels"]) == ["only-on-a", "presence-q"],
    );
    assert_eq!(
        get("/channels/only-on-a", &[])["occupied"].as_bool(),
        Some(true)
    );
    let info = get("/channels/presence-q", &[("info", "user_count")]);
    assert_eq!(info["user_count"].as_u64(), Some(1));
    // /stats is the cluster's too (refreshed every second): node b has no connection of its own.
    eventually("cluster-wide /stats", Duration::from_secs(5), || {
        let (_, stats) = common::http(b.port, "GET", "/stats", "");
        let s = json(&stats);
        s["connections"].as_u64() == Some(2)
            && s["channels"].as_u64() == Some(2)
            && s["cluster"]["node_connections"].as_u64() == Some(0)
    });
    let users = get("/channels/presence-q/users", &[]);
    assert_eq!(users["users"].as_array().unwrap().len(), 1);
    assert_eq!(users["users"][0]["id"].as_str(), Some("u1"));
    on_a.close_tcp();
    member.close_tcp();
    eventually("the channels vacated", Duration::from_secs(5), || {
        get("/channels", &[])["channels"]
            .as_object()
            .unwrap()
            .is_empty()
    });
    assert_eq!(
        get("/channels/only-on-a", &[])["occupied"].as_bool(),
        Some(false)
    );
}

#[test]
fn webhooks_come_once_per_cluster() {
    use common::receiver::{Receiver, describe, named};
    let rx = Receiver::start();
    let url = rx.url();
    let hooks = [
        ("RELAY_WEBHOOK_URL", url.as_str()),
        ("RELAY_WEBHOOK_DEBOUNCE_MS", "0"),
        ("RELAY_WEBHOOK_BATCH_MS", "10"),
        ("RELAY_CLUSTER_NODE_TIMEOUT", "2"),
    ];
    let redis = Redis::start();
    let mut a = node_with(&redis, "a", &hooks);
    let b = node_with(&redis, "b", &hooks);
    let mut on_a = a.client();
    on_a.subscribe("shared");
    let mut on_b = b.client();
    on_b.subscribe("shared");
    let mut u1_a = a.client();
    join(&mut u1_a, "presence-both", "u1", None);
    let mut u1_b = b.client();
    join(&mut u1_b, "presence-both", "u1", None);
    let mut u2_a = a.client();
    join(&mut u2_a, "presence-both", "u2", None);
    rx.wait_for(TIMEOUT, "the joins", |e| {
        named(e, "member_added", None).len() == 2
    });
    on_a.close_tcp();
    on_b.close_tcp();
    u1_a.close_tcp();
    u1_b.close_tcp();
    let events = rx.wait_for(TIMEOUT, "the leaves", |e| {
        named(e, "channel_vacated", Some("shared")).len() == 1
            && named(e, "member_removed", None).len() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let events_later = rx.events();
    assert_eq!(
        events.len(),
        events_later.len(),
        "{}",
        describe(&events_later)
    );
    let count = |name: &str, ch: &str| named(&events_later, name, Some(ch)).len();
    assert_eq!(
        count("channel_occupied", "shared"),
        1,
        "{}",
        describe(&events_later)
    );
    assert_eq!(count("channel_vacated", "shared"), 1);
    assert_eq!(count("channel_occupied", "presence-both"), 1);
    assert_eq!(
        count("member_added", "presence-both"),
        2,
        "u1 once, u2 once"
    );
    assert_eq!(count("member_removed", "presence-both"), 1, "u1 once");
    // Node a dies with u2 in the presence channel: node b reports member_removed and channel_vacated, once.
    a.kill();
    let events = rx.wait_for(Duration::from_secs(10), "the dead node's leaves", |e| {
        named(e, "member_removed", None).len() == 2
            && named(e, "channel_vacated", Some("presence-both")).len() == 1
    });
    let gone: Vec<&str> = named(&events, "member_removed", None)
        .iter()
        .map(|e| sonic_rs::JsonValueTrait::as_str(&e["user_id"]).unwrap())
        .collect();
    assert_eq!(gone, ["u1", "u2"]);
}

#[test]
fn users_are_reached_and_terminated_on_every_node() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut on_a = a.client();
    assert_eq!(
        signin(&mut on_a, r#"{"id":"u1"}"#).name(),
        "pusher:signin_success"
    );
    let mut on_b = b.client();
    assert_eq!(
        signin(&mut on_b, r#"{"id":"u1"}"#).name(),
        "pusher:signin_success"
    );
    let mut other = b.client();
    assert_eq!(
        signin(&mut other, r#"{"id":"u2"}"#).name(),
        "pusher:signin_success"
    );
    // pusher-js subscribes a signed-in user to #server-to-user-{id}.
    for c in [&mut on_a, &mut on_b] {
        c.send_text(r##"{"event":"pusher:subscribe","data":{"channel":"#server-to-user-u1"}}"##);
        c.expect_event("pusher_internal:subscription_succeeded");
    }
    // sendToUser through node b reaches u1 on both nodes.
    let body = r##"{"name":"notice","channel":"#server-to-user-u1","data":"hi"}"##;
    let (status, _) = b.rest("POST", &format!("/apps/{APP_ID}/events"), &[], body);
    assert_eq!(status, 200);
    assert_eq!(on_a.expect_event("notice").data_str(), "hi");
    assert_eq!(on_b.expect_event("notice").data_str(), "hi");
    // terminate_connections through node b closes u1 on node a too, and nobody else.
    let path = format!("/apps/{APP_ID}/users/u1/terminate_connections");
    let (status, body) = b.rest("POST", &path, &[], "{}");
    assert_eq!(status, 200, "{body}");
    for c in [&mut on_a, &mut on_b] {
        let (code, _) = c.expect_close();
        assert_eq!(code, Some(4009));
    }
    other.expect_silence(Duration::from_millis(300));
}

#[test]
fn watchlists_see_users_on_every_node_once() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let data = |e: &Event| sonic_rs::to_string(&e.value["data"]).unwrap();
    // "9" is online on node b before the watcher on node a signs in: the snapshot is the cluster's.
    let mut nine = b.client();
    signin(&mut nine, r#"{"id":"9"}"#);
    // signin_success comes before the cluster has the user online: wait until Redis has it.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    eventually("9 online in Redis", Duration::from_secs(5), || {
        redis::cmd("HEXISTS")
            .arg(format!("{{relay}}:{APP_ID}:online"))
            .arg("9")
            .query::<bool>(&mut con)
            .unwrap()
    });
    let mut watcher = a.client();
    let e = signin(&mut watcher, r#"{"id":"42","watchlist":["7","9"]}"#);
    assert_eq!(e.name(), "pusher:signin_success");
    let e = watcher.expect_event("pusher_internal:watchlist_events");
    assert_eq!(
        data(&e),
        r#"{"events":[{"name":"online","user_ids":["9"]},{"name":"offline","user_ids":["7"]}]}"#
    );
    // "7" comes online on node b, then opens a second connection on node a: one online event.
    let mut seven_b = b.client();
    signin(&mut seven_b, r#"{"id":"7"}"#);
    let e = watcher.expect_event("pusher_internal:watchlist_events");
    assert_eq!(
        data(&e),
        r#"{"events":[{"name":"online","user_ids":["7"]}]}"#
    );
    let mut seven_a = a.client();
    signin(&mut seven_a, r#"{"id":"7"}"#);
    watcher.expect_silence(Duration::from_millis(300));
    // Offline once, when the last connection in the cluster closes.
    seven_b.close_tcp();
    watcher.expect_silence(Duration::from_millis(300));
    seven_a.close_tcp();
    let e = watcher.expect_event("pusher_internal:watchlist_events");
    assert_eq!(
        data(&e),
        r#"{"events":[{"name":"offline","user_ids":["7"]}]}"#
    );
    watcher.expect_silence(Duration::from_millis(300));
}

#[test]
fn subscription_counts_are_the_clusters() {
    use sonic_rs::JsonValueTrait;
    let redis = Redis::start();
    let counting = [("RELAY_SUBSCRIPTION_COUNT", "true")];
    let a = node_with(&redis, "a", &counting);
    let b = node_with(&redis, "b", &counting);
    let count_of = |e: &Event| e.data_json()["subscription_count"].as_u64().unwrap();
    let mut first = a.client();
    first.subscribe("counted");
    assert_eq!(
        count_of(&first.expect_event("pusher_internal:subscription_count")),
        1
    );
    let mut second = b.client();
    second.subscribe("counted");
    assert_eq!(
        count_of(&second.expect_event("pusher_internal:subscription_count")),
        2
    );
    assert_eq!(
        count_of(&first.expect_event("pusher_internal:subscription_count")),
        2
    );
    let mut third = a.client();
    third.subscribe("counted");
    for c in [&mut first, &mut second, &mut third] {
        assert_eq!(
            count_of(&c.expect_event("pusher_internal:subscription_count")),
            3
        );
    }
    let (status, body) = b.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels/counted"),
        &[("info", "subscription_count")],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body)["subscription_count"].as_u64(),
        Some(3),
        "{body}"
    );
    third.close_tcp();
    assert_eq!(
        count_of(&second.expect_event("pusher_internal:subscription_count")),
        2
    );
    assert_eq!(
        count_of(&first.expect_event("pusher_internal:subscription_count")),
        2
    );
}

#[test]
fn cache_channels_replay_what_another_node_published() {
    use sonic_rs::JsonValueTrait;
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    // Published on node a while no node has a subscriber.
    let (status, _) = a.publish("cache-news", "headline", "extra");
    assert_eq!(status, 200);
    let mut late = b.client();
    late.subscribe("cache-news");
    let e = late.expect_event("headline");
    assert_eq!((e.channel(), e.data_str()), (Some("cache-news"), "extra"));
    let (status, body) = b.rest(
        "GET",
        &format!("/apps/{APP_ID}/channels/cache-news"),
        &[("info", "cache")],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body)["cache"]["data"].as_str(),
        Some("extra"),
        "{body}"
    );
    // An empty cache channel is a miss on every node.
    let mut empty = a.client();
    empty.subscribe("cache-empty");
    empty.expect_event("pusher:cache_miss");
    let mut empty_b = b.client();
    empty_b.subscribe("cache-empty");
    empty_b.expect_event("pusher:cache_miss");
}

#[test]
fn the_publish_rate_limit_is_the_clusters() {
    let redis = Redis::start();
    let limited = [
        ("RELAY_RATE_LIMIT_ENABLED", "true"),
        ("RELAY_RATE_LIMIT_MAX", "5"),
    ];
    let a = node_with(&redis, "a", &limited);
    let b = node_with(&redis, "b", &limited);
    let batch = |n: usize| {
        let items: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"name":"e{i}","channel":"rated","data":"x"}}"#))
            .collect();
        format!(r#"{{"batch":[{}]}}"#, items.join(","))
    };
    let path = format!("/apps/{APP_ID}/batch_events");
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    for _ in 0..5 {
        // Start just after a second begins, so both requests fall in it.
        let into = unix().subsec_millis();
        std::thread::sleep(Duration::from_millis(u64::from(1050 - into.min(1000))));
        let second = unix().as_secs();
        let (first, _) = a.rest("POST", &path, &[], &batch(4));
        let (second_status, body) = b.rest("POST", &path, &[], &batch(4));
        if unix().as_secs() != second {
            continue;
        }
        assert_eq!(first, 200);
        assert_eq!(
            second_status, 429,
            "8 events in one second over two nodes: {body}"
        );
        return;
    }
    panic!("never managed two requests within one second");
}

#[test]
fn an_apps_connection_quota_is_the_clusters() {
    let redis = Redis::start();
    let quota = [("RELAY_MAX_CONNECTIONS", "3")];
    let a = node_with(&redis, "a", &quota);
    let b = node_with(&redis, "b", &quota);
    let _one = a.client();
    let _two = a.client();
    let mut three = b.client();
    let mut refused = b.ws();
    let (code, _) = refused.expect_close();
    assert_eq!(
        code,
        Some(4004),
        "three connections over two nodes fill the quota"
    );
    let mut refused_a = a.ws();
    assert_eq!(refused_a.expect_close().0, Some(4004));
    // One leaves: there is room again, on either node.
    three.close_tcp();
    eventually("a slot freed", Duration::from_secs(5), || {
        let mut c = a.ws();
        c.try_recv_event(TIMEOUT)
            .is_some_and(|e| e.name() == "pusher:connection_established")
    });
}

#[test]
fn a_node_taken_for_dead_repairs_its_part_when_it_comes_back() {
    let redis = Redis::start();
    let timeout = [("RELAY_CLUSTER_NODE_TIMEOUT", "2")];
    let a = node_with(&redis, "a", &timeout);
    let b = node_with(&redis, "b", &timeout);
    let mut u1 = a.client();
    join(&mut u1, "presence-p", "u1", None);
    let mut u2 = b.client();
    join(&mut u2, "presence-p", "u2", None);
    u1.expect_event("pusher_internal:member_added");
    // Node a stops answering (a long pause, a partition): node b takes it for dead.
    unsafe { libc::kill(a.pid() as i32, libc::SIGSTOP) };
    let removed = u2.expect_event_within("pusher_internal:member_removed", Duration::from_secs(10));
    assert_eq!(member_of(&removed), "u1");
    // It comes back: its heartbeat finds its key gone, it writes its part again, node b hears u1 join again.
    unsafe { libc::kill(a.pid() as i32, libc::SIGCONT) };
    let added = u2.expect_event_within("pusher_internal:member_added", Duration::from_secs(10));
    assert_eq!(member_of(&added), "u1");
    // Node a's own subscribers never saw u1 (on node a all along) leave.
    u1.expect_silence(Duration::from_millis(500));
    let mut late = b.client();
    let e = join(&mut late, "presence-p", "u3", None);
    assert_eq!(roster(&e), ["u1", "u2", "u3"]);
    assert!(a.log().contains("heartbeat lapsed"), "{}", a.log());
}

#[test]
fn the_member_limit_is_the_clusters() {
    let redis = Redis::start();
    let dir = std::env::temp_dir().join(format!("relay-cluster-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("apps.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"apps":[{{"id":"{APP_ID}","key":"{APP_KEY}","secret":"{APP_SECRET}","max_presence_members":2}}]}}"#
        ),
    )
    .unwrap();
    let apps = [("RELAY_APPS_FILE", file.to_str().unwrap())];
    let a = node_with(&redis, "a", &apps);
    let b = node_with(&redis, "b", &apps);
    let mut u1 = a.client();
    join(&mut u1, "presence-small", "u1", None);
    let mut u2 = b.client();
    join(&mut u2, "presence-small", "u2", None);
    // A third user, on node a: the cluster's roster is full.
    let mut u3 = a.client();
    let data = r#"{"user_id":"u3"}"#;
    let auth = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        &u3.socket_id,
        "presence-small",
        Some(data),
    );
    u3.send_text(&sub_msg("presence-small", &auth, Some(data)));
    let e = u3.expect_event("pusher:error");
    assert!(e.raw.contains("over 2 members"), "{}", e.raw);
    u2.expect_silence(Duration::from_millis(300));
    // u1 leaves: room for u3, on node b, and the roster holds no trace of the refused join.
    u1.close_tcp();
    assert_eq!(
        member_of(&u2.expect_event("pusher_internal:member_removed")),
        "u1"
    );
    let mut u3b = b.client();
    let e = join(&mut u3b, "presence-small", "u3", None);
    assert_eq!(roster(&e), ["u2", "u3"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn history_node(redis: &Redis, id: &str) -> Server {
    Server::start_with(
        &["--history-enabled", "true"],
        &[("RELAY_REDIS_URL", &redis.url()), ("RELAY_NODE_ID", id)],
    )
}

fn id_of(e: &Event) -> String {
    e.value["id"].as_str().expect("an id").to_string()
}

fn subscribe_after(c: &mut Client, channel: &str, last: &str) {
    c.send_text(&format!(
        r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}","last_event_id":"{last}"}}}}"#
    ));
    c.expect_event("pusher_internal:subscription_succeeded");
}

#[test]
fn history_ids_are_the_clusters_and_a_client_recovers_on_any_node() {
    let redis = Redis::start();
    let a = history_node(&redis, "a");
    let b = history_node(&redis, "b");
    let mut on_a = a.client();
    on_a.subscribe("news");
    let mut on_b = b.client();
    on_b.subscribe("news");
    // Publishes through both nodes, each delivered before the next is made (the answer alone does not order
    // publishes of two nodes: each reaches Redis from its own node): ids follow that order, the same everywhere.
    let mut ids: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for n in 1..=4 {
        let via = if n % 2 == 0 { &a } else { &b };
        assert_eq!(via.publish("news", "e", &n.to_string()).0, 200);
        for (i, c) in [&mut on_a, &mut on_b].into_iter().enumerate() {
            let e = c.expect_event("e");
            assert_eq!(e.data_str(), n.to_string());
            ids[i].push(id_of(&e));
        }
    }
    assert_eq!(ids[0], ids[1], "both nodes give each event the same id");
    let seqs: Vec<u64> = ids[0]
        .iter()
        .map(|i| i.split_once('-').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    // A burst through both nodes at once: whatever order Redis takes them in, both nodes see that one order.
    on_a.subscribe("burst");
    on_b.subscribe("burst");
    for n in 0..10 {
        let via = if n % 2 == 0 { &a } else { &b };
        assert_eq!(via.publish("burst", "x", &n.to_string()).0, 200);
    }
    let seen: Vec<Vec<(String, String)>> = [&mut on_a, &mut on_b]
        .into_iter()
        .map(|c| {
            (0..10)
                .map(|_| {
                    let e = c.expect_event("x");
                    (e.data_str().to_string(), id_of(&e))
                })
                .collect()
        })
        .collect();
    assert_eq!(seen[0], seen[1], "one order and the same ids on both nodes");
    let seqs: Vec<u64> = seen[0]
        .iter()
        .map(|(_, i)| i.split_once('-').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    let mut data: Vec<u32> = seen[0].iter().map(|(d, _)| d.parse().unwrap()).collect();
    data.sort_unstable();
    assert_eq!(data, (0..10).collect::<Vec<u32>>());
    on_a.expect_silence(Duration::from_millis(100));
    on_b.expect_silence(Duration::from_millis(10));
    // The client on A leaves; two more events while it is away, one through each node.
    on_a.close_tcp();
    assert_eq!(a.publish("news", "e", "5").0, 200);
    assert_eq!(on_b.expect_event("e").data_str(), "5");
    assert_eq!(b.publish("news", "e", "6").0, 200);
    assert_eq!(on_b.expect_event("e").data_str(), "6");
    // It comes back on a third node, which never had the channel: Redis has what it missed.
    let c = history_node(&redis, "c");
    let mut back = c.client();
    subscribe_after(&mut back, "news", &ids[0][3]);
    assert_eq!(back.expect_event("e").data_str(), "5");
    assert_eq!(back.expect_event("e").data_str(), "6");
    let r = back.expect_event("relay:recovery");
    assert_eq!(r.data_str(), r#"{"recovered":true,"replayed":2}"#);
    assert_eq!(a.publish("news", "e", "7").0, 200);
    let live = back.expect_event("e");
    assert_eq!(live.data_str(), "7");
    assert!(live.value["id"].as_str().unwrap().ends_with("-7"));
    back.expect_silence(Duration::from_millis(300));
    // Recovered on the node it left too (A has no subscriber now, so no window of its own is trusted).
    let mut again = a.client();
    subscribe_after(&mut again, "news", &ids[0][1]);
    let replayed: Vec<String> = (0..5)
        .map(|_| again.expect_event("e").data_str().to_string())
        .collect();
    assert_eq!(replayed, ["3", "4", "5", "6", "7"]);
    let r = again.expect_event("relay:recovery");
    assert_eq!(r.data_str(), r#"{"recovered":true,"replayed":5}"#);
    // An id Redis never gave: told it did not recover, nothing replayed.
    let mut lost = b.client();
    subscribe_after(&mut lost, "news", "12-34");
    let r = lost.expect_event("relay:recovery");
    assert_eq!(r.data_str(), r#"{"recovered":false,"replayed":0}"#);
}

#[test]
fn nodes_reach_redis_over_tls() {
    let dir = std::env::temp_dir().join(format!("relay-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let redis = Redis::start_tls(&dir);
    let url = format!("rediss://localhost:{}/", redis.port);
    let ca = dir.join("ca.pem");
    let start = |id: &str| {
        Server::start_with(
            &[],
            &[
                ("RELAY_REDIS_URL", url.as_str()),
                ("RELAY_NODE_ID", id),
                // The test's CA, for the platform's trust store (rustls-native-certs reads it).
                ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ],
        )
    };
    let (a, b) = (start("a"), start("b"));
    let mut on_a = a.client();
    on_a.subscribe("secure");
    assert_eq!(b.publish("secure", "e", "over tls").0, 200);
    assert_eq!(on_a.expect_event("e").data_str(), "over tls");
    // Without the CA the certificate is refused: the node serves alone and says why.
    let alone = Server::start_with(
        &[],
        &[
            ("RELAY_REDIS_URL", url.as_str()),
            ("RELAY_NODE_ID", "c"),
            ("SSL_CERT_FILE", "/dev/null"),
        ],
    );
    let mut on_c = alone.client();
    on_c.subscribe("secure");
    assert_eq!(b.publish("secure", "e", "not to c").0, 200);
    on_c.expect_silence(Duration::from_millis(500));
    eventually("a log line about Redis", Duration::from_secs(5), || {
        alone.log().contains("cannot reach Redis")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Redis Cluster of three primaries on free ports (slots split in three), in `dir`.
struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
}

impl RedisCluster {
    fn start(dir: &std::path::Path) -> RedisCluster {
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let nodes = ports
            .iter()
            .map(|port| {
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                    .args(["--save", "", "--appendonly", "no"])
                    .current_dir(dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server")
            })
            .collect();
        let rc = RedisCluster { nodes, ports };
        for &port in &rc.ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (i, &port) in rc.ports.iter().enumerate() {
            let mut con = rc.con(port);
            let (from, to) = ranges[i];
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(from)
                .arg(to)
                .query(&mut con)
                .unwrap();
            if i > 0 {
                let _: () = redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(port)
                    .query(&mut rc.con(rc.ports[0]))
                    .unwrap();
            }
        }
        eventually("the Redis Cluster ready", Duration::from_secs(20), || {
            rc.ports.iter().all(|&p| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut rc.con(p))
                    .unwrap();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            })
        });
        rc
    }

    fn con(&self, port: u16) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The primary that owns relay's slot (the `{relay}` hash tag).
    fn owner(&self) -> u16 {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg("{relay}")
            .query(&mut self.con(self.ports[0]))
            .unwrap();
        self.ports[match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        }]
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

#[test]
fn a_redis_cluster_works_through_the_shard_of_relays_slot() {
    let dir = std::env::temp_dir().join(format!("relay-redis-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rc = RedisCluster::start(&dir);
    let owner = rc.owner();
    // The URL names a node that does not own the slot: the nodes find the one that does.
    let seed = *rc.ports.iter().find(|&&p| p != owner).unwrap();
    let url = format!("redis://127.0.0.1:{seed}/");
    let start = |id: &str| {
        Server::start_with(
            &["--history-enabled", "true"],
            &[("RELAY_REDIS_URL", url.as_str()), ("RELAY_NODE_ID", id)],
        )
    };
    let (a, b) = (start("a"), start("b"));
    // Both bridges connected to the owner (/ready follows that): a node publishing before its own bridge is up
    // delivers without a Redis id, by design.
    eventually(
        "both nodes connected to the slot's owner",
        Duration::from_secs(10),
        || {
            [&a, &b]
                .iter()
                .all(|n| common::http(n.port, "GET", "/ready", "").0 == 200)
        },
    );
    let mut on_a = a.client();
    on_a.subscribe("news");
    // Sharded pub/sub: the owner has the node's SSUBSCRIBE.
    eventually("a's shard subscription", Duration::from_secs(5), || {
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg("{relay}:app-id:c:news")
            .query(&mut rc.con(owner))
            .unwrap();
        counts[0].1 == 1
    });
    assert_eq!(b.publish("news", "e", "through the shard").0, 200);
    let e = on_a.expect_event("e");
    assert_eq!(e.data_str(), "through the shard");
    assert!(
        e.value["id"].as_str().unwrap().ends_with("-1"),
        "numbered by Redis"
    );
    // Scripts run on the owner: presence across nodes.
    let mut u1 = a.client();
    join(&mut u1, "presence-room", "u1", None);
    let mut u2 = b.client();
    let e = join(&mut u2, "presence-room", "u2", None);
    assert_eq!(roster(&e), ["u1", "u2"]);
    assert_eq!(
        member_of(&u1.expect_event("pusher_internal:member_added")),
        "u2"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn publications_redis_refuses_are_given_up_once_not_sent_again_and_again() {
    let redis = Redis::start();
    let a = history_node(&redis, "a");
    let b = history_node(&redis, "b");
    let mut on_a = a.client();
    on_a.subscribe("news");
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let set = |con: &mut redis::Connection, k: &str, v: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query(con)
            .unwrap();
    };
    // Out of memory: the numbering script is refused.
    set(&mut con, "maxmemory-policy", "noeviction");
    set(&mut con, "maxmemory", "1");
    assert_eq!(b.publish("news", "e", "refused").0, 200);
    eventually("the refusal logged", Duration::from_secs(5), || {
        b.log().contains("Redis refused publications")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        b.log().matches("Redis refused").count(),
        1,
        "given up once, not resent: {}",
        b.log()
    );
    set(&mut con, "maxmemory", "0");
    assert_eq!(b.publish("news", "e", "taken").0, 200);
    assert_eq!(on_a.expect_event("e").data_str(), "taken");
    on_a.expect_silence(Duration::from_millis(300));
}

#[test]
fn the_clusters_stats_count_an_app_a_reload_added() {
    use sonic_rs::JsonValueTrait;
    let redis = Redis::start();
    let dir = std::env::temp_dir().join(format!("relay-cluster-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("apps.json");
    let app =
        |id: &str, key: &str| format!(r#"{{"id":"{id}","key":"{key}","secret":"{id}-secret"}}"#);
    std::fs::write(&file, format!(r#"{{"apps":[{}]}}"#, app("one", "key-one"))).unwrap();
    let a = node_with(&redis, "a", &[("RELAY_APPS_FILE", file.to_str().unwrap())]);
    std::fs::write(
        &file,
        format!(
            r#"{{"apps":[{},{}]}}"#,
            app("one", "key-one"),
            app("two", "key-two")
        ),
    )
    .unwrap();
    // SAFETY: signalling the child process this test started.
    unsafe { libc::kill(a.pid() as i32, libc::SIGHUP) };
    let mut c = {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut ws = Ws::connect(a.port, "/app/key-two?protocol=7");
            if ws.recv_event().name() == "pusher:connection_established" {
                break ws;
            }
            assert!(std::time::Instant::now() < deadline, "app two never served");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    c.subscribe("in-app-two");
    // The totals come from Redis (the cluster's), refreshed every second: app two's channel is in them.
    eventually(
        "app two's channel in the cluster's /stats",
        Duration::from_secs(5),
        || {
            let (_, stats) = common::http(a.port, "GET", "/stats", "");
            let s = json(&stats);
            s["channels"].as_u64() == Some(1) && s["cluster"]["node"].as_str() == Some("a")
        },
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
