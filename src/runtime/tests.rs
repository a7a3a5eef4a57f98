//! The runtime without sockets or threads: several cores on one thread, their inboxes pumped by hand, sessions
//! whose outboxes the tests read. Covers the handler, the publish and subscribe paths and each feature that
//! spans cores.

use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sonic_rs::{JsonValueTrait, Value};

use crate::channels::publication::{Publication, Source};
use crate::config::{AppConfig, Config};
use crate::metrics::{Counter, Gauge};
use crate::protocol::auth;
use crate::protocol::session::Session;
use crate::runtime::core::Core;
use crate::runtime::facts::Facts;
use crate::runtime::handler::handle_text;
use crate::runtime::inbox::{InboxReceiver, inbox};
use crate::runtime::message::{CoreMsg, NoReply};
use crate::runtime::query::{Answer, Query};
use crate::runtime::shared::Shared;
use crate::runtime::users;

struct Cores {
    cores: Vec<Rc<Core>>,
    inboxes: Vec<Rc<InboxReceiver<CoreMsg>>>,
}

impl Cores {
    fn new(n: usize, app: AppConfig) -> Self {
        let config = Config {
            workers: n,
            apps: vec![app],
            ..Config::default()
        };
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| inbox(1024)).unzip();
        let inboxes: Vec<_> = inboxes.into_iter().map(Rc::new).collect();
        let shared = Arc::new(Shared::new(config, senders));
        let cores: Vec<_> = (0..n).map(|i| Core::new_rc(i, shared.clone())).collect();
        for (core, rx) in cores.iter().zip(&inboxes) {
            core.attach_inbox(rx.clone());
        }
        Cores { cores, inboxes }
    }

    fn core(&self, i: usize) -> &Rc<Core> {
        &self.cores[i]
    }

    /// Hands every queued message to its core until all inboxes are empty; returns how many moved.
    fn pump(&self) -> usize {
        let mut total = 0;
        loop {
            let mut moved = 0;
            for (core, rx) in self.cores.iter().zip(&self.inboxes) {
                let mut batch = Vec::new();
                rx.drain_into(&mut batch);
                moved += batch.len();
                core.handle_batch(batch);
            }
            if moved == 0 {
                return total;
            }
            total += moved;
        }
    }

    /// Hands core `i` what is queued for it now (one batch, control lane first, as the runtime does).
    fn pump_core(&self, i: usize) -> usize {
        let mut batch = Vec::new();
        self.inboxes[i].drain_into(&mut batch);
        let n = batch.len();
        self.cores[i].handle_batch(batch);
        n
    }

    /// A registered session on `core`, with no socket behind it.
    fn connect(&self, core: usize) -> Rc<Session> {
        let c = self.core(core);
        let s = Rc::new(Session::new(c.next_socket_id(), 0, -1, 1 << 20));
        c.register(&s);
        s
    }

    /// Sends `text` as a client message of `s` on `core`, to completion.
    fn say(&self, core: usize, s: &Rc<Session>, text: &str) {
        let c = self.core(core).clone();
        let s = s.clone();
        let text = text.to_string();
        self.run(async move { handle_text(&c, &s, text.as_bytes()).await });
        self.pump();
    }

    /// Runs `fut` to completion on a monoio runtime, pumping the inboxes whenever it waits.
    fn run<T>(&self, fut: impl Future<Output = T>) -> T {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let mut fut = std::pin::pin!(fut);
            loop {
                if let Poll::Ready(v) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
                    return v;
                }
                if self.pump() == 0 {
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    }

    fn metric(&self, c: Counter) -> u64 {
        self.core(0).shared.metrics.total(c)
    }

    fn occupied(&self) -> i64 {
        self.core(0).shared.metrics.gauge(Gauge::OccupiedChannels)
    }

    /// Nothing is left joined, counted or watched on any core.
    fn assert_no_facts_left(&self) {
        for c in &self.cores {
            assert!(c.facts.borrow().is_empty(), "core {} keeps facts", c.id);
            assert_eq!(
                c.channels.borrow().channel_count(),
                0,
                "core {} keeps channels",
                c.id
            );
        }
        assert_eq!(self.occupied(), 0);
    }
}

/// The events queued for `s`, drained: (event, channel, data as sent).
fn events(s: &Session) -> Vec<Value> {
    let mut batch = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    let _ = s.outbox.poll_take(&mut cx, &mut batch, usize::MAX);
    batch
        .iter()
        .filter(|f| f[0] & 0x0f == 1)
        .map(|f| {
            let start = match f[1] & 0x7f {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            sonic_rs::from_slice(&f[start..]).expect("our frames are JSON")
        })
        .collect()
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect()
}

fn subscribe(cores: &Cores, core: usize, s: &Rc<Session>, channel: &str) {
    cores.say(
        core,
        s,
        &format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#),
    );
}

fn join_presence(cores: &Cores, core: usize, s: &Rc<Session>, channel: &str, user: &str) {
    let cfg = AppConfig::default();
    let data = format!(r#"{{"user_id":"{user}"}}"#);
    let token = auth::sign_channel(
        &cfg.key,
        &cfg.secret,
        &s.socket_id_text,
        channel,
        Some(&data),
    );
    let msg = sonic_rs::json!({
        "event": "pusher:subscribe",
        "data": {"channel": channel, "auth": token, "channel_data": data}
    });
    cores.say(core, s, &msg.to_string());
}

fn rest_event(app_channel: &[&str], name: &str, data: &str) -> Publication {
    Publication::new(
        0,
        Source::Rest,
        app_channel,
        &crate::protocol::outbound::string_token(name),
        &crate::protocol::outbound::string_token(data),
        None,
        None,
    )
}

#[test]
fn the_handler_answers_pings_errors_and_subscribes() {
    let cores = Cores::new(1, AppConfig::default());
    let s = cores.connect(0);
    cores.say(0, &s, r#"{"event":"pusher:ping","data":{}}"#);
    cores.say(0, &s, "not json");
    subscribe(&cores, 0, &s, "news");
    subscribe(&cores, 0, &s, "news");
    let got = events(&s);
    assert_eq!(
        names(&got),
        [
            "pusher:pong",
            "pusher:error",
            "pusher_internal:subscription_succeeded",
            "pusher:error"
        ]
    );
    assert!(
        got[3]["data"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Existing subscription")
    );
    assert_eq!(cores.occupied(), 1);
    cores.say(
        0,
        &s,
        r#"{"event":"pusher:unsubscribe","data":{"channel":"news"}}"#,
    );
    cores.assert_no_facts_left();
}

#[test]
fn a_publication_reaches_every_core_except_the_excluded_socket() {
    let cores = Cores::new(3, AppConfig::default());
    let subs: Vec<_> = (0..6).map(|i| cores.connect(i % 3)).collect();
    for (i, s) in subs.iter().enumerate() {
        subscribe(&cores, i % 3, s, "c");
        events(s);
    }
    assert_eq!(
        cores.occupied(),
        1,
        "one channel however many cores have it"
    );
    let mut p = rest_event(&["c"], "e", "d");
    p.except = Some(subs[4].socket_id);
    cores.core(1).publish(p).unwrap();
    cores.pump();
    for (i, s) in subs.iter().enumerate() {
        let got = events(s);
        let expected: &[&str] = if i == 4 { &[] } else { &["e"] };
        assert_eq!(names(&got), expected, "subscriber {i}");
    }
    assert_eq!(cores.metric(Counter::Deliveries), 5);
    assert_eq!(cores.metric(Counter::PublishesRest), 1);
    for (i, s) in subs.iter().enumerate() {
        cores.core(i % 3).unregister(s);
    }
    cores.pump();
    cores.assert_no_facts_left();
}

/// A publisher that waits for each answer before the next publish may reach a different core each time (a new
/// connection): the second core must deliver what the first queued for it before its own publication.
#[test]
fn publishes_answered_one_after_another_keep_their_order_on_every_core() {
    for app in [AppConfig::default(), history_app()] {
        let cores = Cores::new(2, app);
        let channel = channel_homed_on(0, 2);
        let subs: Vec<_> = (0..2).map(|i| cores.connect(i)).collect();
        for (i, s) in subs.iter().enumerate() {
            subscribe(&cores, i, s, &channel);
            events(s);
        }
        // Core 0 publishes (core 1's share waits in its inbox), then core 1 publishes before pumping it. With
        // history, channel's home is core 0: the second publish goes through core 0's inbox, behind nothing.
        for (n, core) in [0, 1, 1, 0, 1].into_iter().enumerate() {
            cores
                .core(core)
                .publish(rest_event(&[channel.as_str()], "e", &n.to_string()))
                .unwrap();
        }
        cores.pump();
        for (i, s) in subs.iter().enumerate() {
            let data: Vec<String> = events(s)
                .iter()
                .map(|e| e["data"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(data, ["0", "1", "2", "3", "4"], "subscriber on core {i}");
        }
    }
}

#[test]
fn client_events_go_to_the_others_on_a_private_channel() {
    let cores = Cores::new(2, AppConfig::default());
    let cfg = AppConfig::default();
    let (a, b) = (cores.connect(0), cores.connect(1));
    for (core, s) in [(0, &a), (1, &b)] {
        let token = auth::sign_channel(
            &cfg.key,
            &cfg.secret,
            &s.socket_id_text,
            "private-room",
            None,
        );
        let msg = sonic_rs::json!({"event": "pusher:subscribe", "data": {"channel": "private-room", "auth": token}});
        cores.say(core, s, &msg.to_string());
        events(s);
    }
    cores.say(
        0,
        &a,
        r#"{"event":"client-typing","channel":"private-room","data":{"x":1}}"#,
    );
    assert!(events(&a).is_empty(), "never echoed");
    let got = events(&b);
    assert_eq!(names(&got), ["client-typing"]);
    assert_eq!(got[0]["data"].as_str(), Some(r#"{"x":1}"#));
    assert_eq!(cores.metric(Counter::PublishesClient), 1);
}

#[test]
fn presence_counts_users_once_across_cores_and_connections() {
    let cores = Cores::new(3, AppConfig::default());
    let watcher = cores.connect(2);
    join_presence(&cores, 2, &watcher, "presence-room", "w");
    assert_eq!(
        names(&events(&watcher)),
        ["pusher_internal:subscription_succeeded"]
    );
    // User 7 on two connections, two cores.
    let (a, b) = (cores.connect(0), cores.connect(1));
    join_presence(&cores, 0, &a, "presence-room", "7");
    let success = events(&a);
    let roster: Value = sonic_rs::from_str(success[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(roster["presence"]["count"].as_u64(), Some(2));
    join_presence(&cores, 1, &b, "presence-room", "7");
    events(&b);
    assert_eq!(
        names(&events(&watcher)),
        ["pusher_internal:member_added"],
        "one member_added per user"
    );
    let users = cores
        .run(cores.core(1).presence_users(0, "presence-room"))
        .unwrap();
    assert_eq!(users, [Box::from("w"), Box::from("7")]);
    cores.core(0).unregister(&a);
    cores.pump();
    assert!(
        events(&watcher).is_empty(),
        "the user is still there on another connection"
    );
    cores.say(
        1,
        &b,
        r#"{"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}"#,
    );
    let got = events(&watcher);
    assert_eq!(names(&got), ["pusher_internal:member_removed"]);
    cores.core(2).unregister(&watcher);
    cores.core(1).unregister(&b);
    cores.pump();
    cores.assert_no_facts_left();
}

#[test]
fn a_full_presence_channel_refuses_a_new_user() {
    let app = AppConfig {
        max_presence_members: 1,
        ..AppConfig::default()
    };
    let cores = Cores::new(2, app);
    let (a, b) = (cores.connect(0), cores.connect(1));
    join_presence(&cores, 0, &a, "presence-x", "1");
    join_presence(&cores, 1, &b, "presence-x", "2");
    let got = events(&b);
    assert_eq!(names(&got), ["pusher:error"]);
    assert!(
        b.memberships.borrow().is_empty(),
        "a refused join leaves nothing behind"
    );
    cores.core(0).unregister(&a);
    cores.core(1).unregister(&b);
    cores.pump();
    cores.assert_no_facts_left();
}

#[test]
fn cache_channels_replay_the_last_rest_event_and_miss_otherwise() {
    let cores = Cores::new(2, AppConfig::default());
    let early = cores.connect(0);
    subscribe(&cores, 0, &early, "cache-x");
    assert_eq!(
        names(&events(&early)),
        [
            "pusher_internal:subscription_succeeded",
            "pusher:cache_miss"
        ]
    );
    cores
        .core(0)
        .publish(rest_event(&["cache-x"], "price", "42"))
        .unwrap();
    cores.pump();
    let late = cores.connect(1);
    subscribe(&cores, 1, &late, "cache-x");
    let got = events(&late);
    assert_eq!(
        names(&got),
        ["pusher_internal:subscription_succeeded", "price"]
    );
    assert_eq!(got[1]["data"].as_str(), Some("42"));
    let cached = cores
        .run(cores.core(1).cached(0, "cache-x"))
        .unwrap()
        .unwrap();
    assert_eq!(&cached.data_token[..], br#""42""#);
}

#[test]
fn subscription_counts_are_totals_across_cores() {
    let app = AppConfig {
        subscription_count: true,
        ..AppConfig::default()
    };
    let cores = Cores::new(2, app);
    let (a, b) = (cores.connect(0), cores.connect(1));
    subscribe(&cores, 0, &a, "room");
    subscribe(&cores, 1, &b, "room");
    let count = |e: &Value| -> u64 {
        let data: Value = sonic_rs::from_str(e["data"].as_str().unwrap()).unwrap();
        data["subscription_count"].as_u64().unwrap()
    };
    let got = events(&a);
    let counts: Vec<u64> = got
        .iter()
        .filter(|e| e["event"].as_str() == Some("pusher_internal:subscription_count"))
        .map(count)
        .collect();
    assert_eq!(counts, [1, 2]);
    cores.core(1).unregister(&b);
    cores.pump();
    assert_eq!(events(&a).iter().map(count).collect::<Vec<_>>(), [1]);
}

#[test]
fn watchers_learn_when_users_come_and_go_and_terminate_closes_them() {
    let cores = Cores::new(3, AppConfig::default());
    let cfg = AppConfig::default();
    let signin = |core: usize, s: &Rc<Session>, user_data: &str| {
        let token = auth::sign_user(&cfg.key, &cfg.secret, &s.socket_id_text, user_data);
        let msg = sonic_rs::json!({"event": "pusher:signin", "data": {"auth": token, "user_data": user_data}});
        cores.say(core, s, &msg.to_string());
    };
    let watcher = cores.connect(0);
    signin(0, &watcher, r#"{"id":"w","watchlist":["7","8"]}"#);
    let got = events(&watcher);
    assert_eq!(
        names(&got),
        ["pusher:signin_success", "pusher_internal:watchlist_events"]
    );
    assert_eq!(
        got[1]["data"]["events"][0]["name"].as_str(),
        Some("offline")
    );
    let seven = cores.connect(1);
    signin(1, &seven, r#"{"id":"7"}"#);
    let got = events(&watcher);
    assert_eq!(names(&got), ["pusher_internal:watchlist_events"]);
    assert_eq!(got[0]["data"]["events"][0]["name"].as_str(), Some("online"));
    users::terminate(cores.core(2), 0, "7");
    cores.pump();
    assert!(seven.is_closing(), "terminated");
    cores.core(1).unregister(&seven);
    cores.pump();
    let got = events(&watcher);
    assert_eq!(
        got[0]["data"]["events"][0]["name"].as_str(),
        Some("offline")
    );
    cores.core(0).unregister(&watcher);
    cores.pump();
    cores.assert_no_facts_left();
}

#[test]
fn a_core_that_never_answers_times_out_instead_of_hanging() {
    let cores = Cores::new(2, AppConfig::default());
    let asker = cores.core(0).clone();
    let q = Query::Channel {
        app: 0,
        name: Arc::from("c"),
    };
    // Run without pumping core 1's inbox: its answer never comes.
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let answer = rt.block_on(async move { asker.query(q).await });
    assert!(matches!(answer, Err(NoReply)));
    assert!(started.elapsed() >= crate::runtime::message::REPLY_TIMEOUT);
    // With the inbox pumped it answers.
    let q = Query::Channel {
        app: 0,
        name: Arc::from("c"),
    };
    let answers = cores.run(cores.core(0).query(q)).unwrap();
    assert!(matches!(
        answers.as_slice(),
        [Answer::Count(0), Answer::Count(0)]
    ));
}

fn history_app() -> AppConfig {
    AppConfig {
        history_enabled: true,
        history_max: 10,
        ..AppConfig::default()
    }
}

/// A channel name whose home is core `home` of `cores`.
fn channel_homed_on(home: usize, cores: usize) -> String {
    (0..)
        .map(|i| format!("room-{i}"))
        .find(|c| crate::channels::facts::home_core(0, c, cores) == home)
        .unwrap()
}

#[test]
fn history_numbers_events_on_the_home_core_and_frames_carry_the_id() {
    let cores = Cores::new(3, history_app());
    let channel = channel_homed_on(1, 3);
    let subs: Vec<_> = (0..3).map(|i| cores.connect(i)).collect();
    for (i, s) in subs.iter().enumerate() {
        subscribe(&cores, i, s, &channel);
        events(s);
    }
    for n in 0..3 {
        cores
            .core(n % 3)
            .publish(rest_event(&[channel.as_str()], "e", &n.to_string()))
            .unwrap();
        cores.pump();
    }
    let ids: Vec<Vec<String>> = subs
        .iter()
        .map(|s| {
            events(s)
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(ids[0].len(), 3);
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "every subscriber sees the same ids: {ids:?}"
    );
    let seqs: Vec<u64> = ids[0]
        .iter()
        .map(|i| i.split_once('-').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    // Apps without history keep Pusher's frames byte for byte.
    let plain = Cores::new(1, AppConfig::default());
    let s = plain.connect(0);
    subscribe(&plain, 0, &s, "c");
    events(&s);
    plain.core(0).publish(rest_event(&["c"], "e", "d")).unwrap();
    assert!(events(&s)[0].get("id").is_none());
}

#[test]
fn a_resubscribe_with_the_last_id_gets_exactly_the_missed_events_then_live_ones() {
    let cores = Cores::new(3, history_app());
    let channel = channel_homed_on(0, 3);
    let first = cores.connect(2);
    subscribe(&cores, 2, &first, &channel);
    events(&first);
    for n in 1..=3 {
        cores
            .core(1)
            .publish(rest_event(&[channel.as_str()], "e", &n.to_string()))
            .unwrap();
    }
    cores.pump();
    let last = events(&first).last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    cores.core(2).unregister(&first);
    for n in 4..=5 {
        cores
            .core(1)
            .publish(rest_event(&[channel.as_str()], "e", &n.to_string()))
            .unwrap();
    }
    cores.pump();
    // Event 6 races the resubscribe: the home has sent it to core 2 before the replay is asked for.
    cores
        .core(1)
        .publish(rest_event(&[channel.as_str()], "e", "6"))
        .unwrap();
    cores.pump_core(0);
    let again = cores.connect(2);
    let msg = format!(
        r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}","last_event_id":"{last}"}}}}"#
    );
    cores.say(2, &again, &msg);
    cores
        .core(1)
        .publish(rest_event(&[channel.as_str()], "e", "7"))
        .unwrap();
    cores.pump();
    let got = events(&again);
    let shown: Vec<String> = got
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["event"].as_str().unwrap(),
                e["data"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            "pusher_internal:subscription_succeeded:{}",
            "e:4",
            "e:5",
            "e:6",
            r#"relay:recovery:{"recovered":true,"replayed":3}"#,
            "e:7",
        ]
    );
}

#[test]
fn an_unknown_last_id_fails_closed_and_pages_cover_the_history() {
    let cores = Cores::new(2, history_app());
    let s = cores.connect(0);
    for n in 1..=4 {
        cores
            .core(1)
            .publish(rest_event(&["c"], "e", &n.to_string()))
            .unwrap();
    }
    cores.pump();
    for bad in ["", "not-an-id", "1-1", "99999999999999999999-1"] {
        let msg = format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"c","last_event_id":"{bad}"}}}}"#
        );
        cores.say(0, &s, &msg);
        let got = events(&s);
        assert_eq!(
            names(&got),
            ["pusher_internal:subscription_succeeded", "relay:recovery"],
            "{bad}"
        );
        assert_eq!(
            got[1]["data"].as_str(),
            Some(r#"{"recovered":false,"replayed":0}"#)
        );
        cores.say(
            0,
            &s,
            r#"{"event":"pusher:unsubscribe","data":{"channel":"c"}}"#,
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = cores
            .run(crate::runtime::history::page(
                cores.core(0),
                0,
                "c",
                cursor.as_deref(),
                3,
            ))
            .unwrap()
            .unwrap();
        seen.extend(page.events.iter().map(|e| e.id.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 3, 4]);
}

#[test]
fn a_presence_resubscribe_replays_too() {
    let cores = Cores::new(2, history_app());
    let channel = "presence-h";
    let a = cores.connect(0);
    join_presence(&cores, 0, &a, channel, "1");
    events(&a);
    let cfg = history_app();
    cores
        .core(1)
        .publish(rest_event(&[channel], "e", "x"))
        .unwrap();
    cores.pump();
    let first = events(&a)[0]["id"].as_str().unwrap().to_string();
    cores
        .core(1)
        .publish(rest_event(&[channel], "e", "y"))
        .unwrap();
    cores.pump();
    let b = cores.connect(1);
    let data = r#"{"user_id":"2"}"#;
    let token = auth::sign_channel(
        &cfg.key,
        &cfg.secret,
        &b.socket_id_text,
        channel,
        Some(data),
    );
    let msg = sonic_rs::json!({
        "event": "pusher:subscribe",
        "data": {"channel": channel, "auth": token, "channel_data": data, "last_event_id": first}
    });
    cores.say(1, &b, &msg.to_string());
    let got = events(&b);
    assert_eq!(
        names(&got),
        [
            "pusher_internal:subscription_succeeded",
            "e",
            "relay:recovery"
        ]
    );
    assert_eq!(got[1]["data"].as_str(), Some("y"));
}

#[test]
fn work_for_an_app_added_by_a_reload_reaches_cores_before_their_switch() {
    let first = AppConfig::default();
    let cores = Cores::new(2, first.clone());
    let added = AppConfig {
        id: "added".into(),
        key: "added-key".into(),
        ..AppConfig::default()
    };
    // The reload as `Server::reload_apps` does it: the shared registry first; the cores' `CoreMsg::Apps` are
    // still queued when the new app's first work arrives.
    let shared = cores.core(0).shared.clone();
    let (next, summary) = shared.registry().reloaded(&[first, added]);
    assert_eq!(summary.added, vec![1]);
    let next = Arc::new(next);
    shared.set_registry(next.clone());
    // A client of the new app on core 0 (its handshake found the app in the shared registry).
    let c = cores.core(0);
    assert!(
        c.registry_with(|r| r.by_key("added-key").is_some())
            .by_key("added-key")
            .is_some()
    );
    let s = Rc::new(Session::new(c.next_socket_id(), 1, -1, 1 << 20));
    c.register(&s);
    subscribe(&cores, 0, &s, "news");
    assert_eq!(
        names(&events(&s)),
        ["pusher_internal:subscription_succeeded"]
    );
    // Core 1 has not switched and publishes for the new app: its own fan-out and core 0's take it.
    let p = Publication::new(1, Source::Rest, &["news"], br#""e""#, br#""1""#, None, None);
    assert!(cores.core(1).publish(p).is_ok());
    cores.pump();
    assert_eq!(names(&events(&s)), ["e"]);
    for (i, core) in cores.cores.iter().enumerate() {
        let _ = core.shared.inboxes[i].send(CoreMsg::Apps(next.clone()));
    }
    cores.pump();
    assert_eq!(cores.core(1).registry().generation, 1);
    assert!(!s.is_closing(), "the new app's session stays");
}
