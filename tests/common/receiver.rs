//! A real HTTP/1.1 webhook receiver for tests: keep-alive, Content-Length bodies, every request recorded, and
//! answers scripted per request (a status, or never answering).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// Read the request, never answer, keep the connection open.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Hook {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        sonic_rs::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// `(name, channel, user_id)` of each event.
    pub fn events(&self) -> Vec<Value> {
        let v = self.json();
        v["events"]
            .as_array()
            .expect("events array")
            .iter()
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct State {
    hooks: Vec<Hook>,
    /// Answers for the next requests, in order; afterwards `then`.
    script: VecDeque<Answer>,
    then: Option<Answer>,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub fn start() -> Receiver {
        Self::scripted(&[], Answer::Status(200))
    }

    /// Answers `script` to the first requests, then `then`.
    pub fn scripted(script: &[Answer], then: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        Self::on(listener, script, then)
    }

    /// Listens on `port` (a receiver that comes up late).
    pub fn start_on(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver port");
        Self::on(listener, &[], Answer::Status(200))
    }

    fn on(listener: TcpListener, script: &[Answer], then: Answer) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            script: script.iter().copied().collect(),
            then: Some(then),
            ..State::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let st = st.clone();
                std::thread::spawn(move || serve(stream, st));
            }
        });
        Receiver { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.state.lock().unwrap().hooks.clone()
    }

    /// Every event received so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.hooks().iter().flat_map(|h| h.events()).collect()
    }

    /// Waits until `pred` holds for the events received, or panics after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "webhooks: {what} not seen within {timeout:?}; got {}",
                describe(&events)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `name channel user_id` per event, for messages.
pub fn describe(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["name"].as_str().unwrap_or("?"),
                e["channel"].as_str().unwrap_or("-"),
                e["user_id"].as_str().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Events named `name` (optionally on `channel`).
pub fn named<'a>(events: &'a [Value], name: &str, channel: Option<&str>) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["name"].as_str() == Some(name))
        .filter(|e| channel.is_none_or(|c| e["channel"].as_str() == Some(c)))
        .collect()
}

fn serve(stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
                if n == "content-length" {
                    length = v.parse().unwrap();
                }
                headers.push((n, v));
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = {
            let mut s = state.lock().unwrap();
            s.hooks.push(Hook {
                path,
                headers,
                body,
                at: Instant::now(),
            });
            match s.script.pop_front() {
                Some(a) => a,
                None => s.then.unwrap_or(Answer::Status(200)),
            }
        };
        match answer {
            Answer::Hang => {
                std::thread::sleep(Duration::from_secs(3600));
                return;
            }
            Answer::Status(code) => {
                let reply = format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\n\r\nok");
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
