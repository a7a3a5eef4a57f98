//! A WebSocket connection from upgrade to teardown (docs/protocol.md#handshake).
//!
//! After the 101, refusals (`protocol::handshake::admit`: 4001, 4003, 4007, 4200, 4004, 4100) are a `pusher:error`
//! then a Close with the same code. An accepted connection becomes a `Session`: a writer task drains its outbox,
//! and this task reads. Reading waits for readability first and only then borrows a per-core buffer, so an idle
//! connection pins no read buffer. Generic over the stream (plain TCP or TLS, `server::transport`), compiled once
//! for each. WebSocket bytes are counted here as read and in the writer as written (`WsBytesReceived`,
//! `WsBytesSent`): once per socket operation, plaintext only (compressed bytes, for permessage-deflate).
//!
//! permessage-deflate is negotiated with the 101 (`ws::handshake::negotiate_deflate`); the session only records
//! that it was, and its compressed client messages are inflated by the core's inflater (`ws::deflate`).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::app::App;
use crate::http::request::RequestHead;
use crate::http::response::Response;
use crate::metrics::Counter;
use crate::protocol::codes::close;
use crate::protocol::liveness::CLOSE_GRACE;
use crate::protocol::session::Session;
use crate::protocol::{handshake as pusher_handshake, outbound};
use crate::runtime::core::Core;
use crate::runtime::handler;
use crate::runtime::message::reply;
use crate::server::transport::{ReadHalf, Transport};
use crate::ws::deflate::Negotiated;
use crate::ws::frame::{self, FrameDecoder, Message};
use crate::ws::{handshake, writer};

pub async fn serve<S: Transport>(
    core: Rc<Core>,
    mut stream: S,
    head: RequestHead,
    leftover: Vec<u8>,
) {
    let checked = pusher_handshake::app_key_from_path(&head.path)
        .ok_or_else(|| Response::error(404, "Not found: WebSocket connections go to /app/{key}"))
        .and_then(|key| handshake::validate(&head).map(|ws_key| (key, ws_key)));
    let (app_key, ws_key) = match checked {
        Ok(k) => k,
        Err(resp) => {
            let mut out = Vec::new();
            resp.write_to(&mut out, false, false);
            let _ = stream.write_all(out).await;
            return;
        }
    };
    let deflate = handshake::negotiate_deflate(&head, core.shared.config.ops.compression.enabled);
    if stream
        .write_all(handshake::accept_response_with(ws_key, deflate))
        .await
        .0
        .is_err()
    {
        return;
    }
    let shared = core.shared.clone();
    let app = match pusher_handshake::admit(
        &core.registry_with(|r| r.by_key(app_key).is_some()),
        &shared.connections,
        app_key,
        &head.query,
        shared.is_shutting_down(),
    ) {
        Ok(app) => app,
        Err(r) => return refuse(&core, stream, r.code, &r.message).await,
    };
    // An app's connection quota is the cluster's: Redis counts every node's connections.
    if let Some(cluster) = shared.cluster.get()
        && app.config.max_connections > 0
    {
        let room = reply(cluster.conn_admit(&app.config.id, app.config.max_connections)).await;
        // Refused: Redis counted nothing for it, so there is nothing to release there.
        if room == Ok(Some(false)) {
            pusher_handshake::release(&app, &shared.connections);
            return refuse(
                &core,
                stream,
                close::APP_OVER_QUOTA,
                "Application is over connection quota",
            )
            .await;
        }
    }
    // A reload that removed the app while this waited for Redis closed the app's sessions before this one
    // existed: refuse it as that reload would have.
    if core.app(app.idx).removed {
        release_quota(&core, &app);
        return refuse(
            &core,
            stream,
            close::UNKNOWN_APP,
            "Application does not exist",
        )
        .await;
    }
    let _ = stream.set_nodelay();
    drop(head);

    let session = Rc::new(Session::new(
        core.next_socket_id(),
        app.idx,
        stream.as_raw_fd(),
        shared.config.limits.max_outbound_queue_bytes,
    ));
    if deflate.is_some() {
        session.deflate.set(true);
        Negotiated::opened();
    }
    core.register(&session);
    crate::debug!(
        "socket {} connected on core {} (app {})",
        session.socket_id,
        core.id,
        app.config.id
    );
    let (rd, wr) = stream.into_halves();
    monoio::spawn(write(core.clone(), session.clone(), wr));
    session.send(outbound::connection_established(
        &session.socket_id_text,
        shared.config.activity_timeout_secs,
    ));

    // The connection's long-lived task holds only the read loop's state; the handshake's is freed here.
    let rfut = run(core, session, rd, leftover);
    monoio::spawn(rfut);
}

/// The writer task: drains the outbox; on a socket error the whole connection is cut.
async fn write<W: AsyncWriteRent>(core: Rc<Core>, session: Rc<Session>, mut wr: W) {
    if !writer::run(&session.outbox, &mut wr, core.metrics()).await {
        session.shutdown_socket();
    }
    // Dropping the write half sends FIN after the last frame (usually the Close frame).
    drop(wr);
    session.writer_alive.set(false);
}

async fn run<R: ReadHalf>(core: Rc<Core>, session: Rc<Session>, rd: R, leftover: Vec<u8>) {
    read_loop(&core, &session, rd, leftover).await;
    session.reader_alive.set(false);
    core.retire(session);
}

/// Tears down an ended connection (run by the core's retire loop, a bounded batch per turn): its subscriptions,
/// memberships and sign-in, its outbox, its quota slots.
/// Gives back the connection's place in the server's and the app's quotas (the cluster's when the app has one).
fn release_quota(core: &Core, app: &App) {
    pusher_handshake::release(app, &core.shared.connections);
    if let Some(cluster) = core.shared.cluster.get()
        && app.config.max_connections > 0
    {
        cluster.conn_release(&app.config.id);
    }
}

pub fn finish(core: &Core, session: &Rc<Session>) {
    core.unregister(session);
    if session.deflate.get() {
        Negotiated::closed();
    }
    if session.outbox.is_open() {
        // The client went away without a close handshake: nothing more can be written.
        session.outbox.kill();
    }
    release_quota(core, &core.app(session.app));
    if session.writer_alive.get() {
        // The session has left the table, so the liveness scan no longer sees it: a peer that stops reading
        // after its Close must not keep the writer (and socket) forever.
        let s = session.clone();
        monoio::spawn(async move {
            monoio::time::sleep(CLOSE_GRACE).await;
            s.abort();
        });
    }
    crate::debug!("socket {} disconnected", session.socket_id);
}

/// Handshake-time refusal (docs/protocol.md#handshake): error event, Close with the same code, then wait briefly for
/// the client's Close so our frames are not lost to a reset.
async fn refuse<S: Transport>(core: &Core, mut stream: S, code: u16, message: &str) {
    crate::debug!("websocket refused with {code}: {message}");
    let mut out = outbound::error(Some(code), message).to_vec();
    out.extend_from_slice(&frame::encode_close(code, message));
    let len = out.len() as u64;
    if stream.write_all(out).await.0.is_err() {
        return;
    }
    core.metrics().add(Counter::WsBytesSent, len);
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 512];
    for _ in 0..8 {
        match monoio::time::timeout(Duration::from_secs(1), stream.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => buf = b,
            _ => return,
        }
    }
}

/// Per-core pool of read buffers, borrowed only while a read is in flight.
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

async fn read_loop<R: ReadHalf>(core: &Core, session: &Rc<Session>, mut rd: R, leftover: Vec<u8>) {
    let limits = &core.shared.config.limits;
    // Frames that came in with the upgrade request.
    if !leftover.is_empty() {
        core.metrics()
            .add(Counter::WsBytesReceived, leftover.len() as u64);
    }
    let mut decoder = if session.deflate.get() {
        FrameDecoder::with_deflate(limits.max_ws_message_bytes)
    } else {
        FrameDecoder::new(limits.max_ws_message_bytes)
    };
    let mut buf = BytesMut::from(&leftover[..]);
    // A fragmented message holds a buffer until its last fragment: it must complete in time, however many
    // control frames keep the connection alive meanwhile.
    let mut fragment_deadline: Option<Instant> = None;
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(msg)) => {
                    session.touch();
                    if !on_message(core, session, msg).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    crate::debug!("socket {} protocol error: {e}", session.socket_id);
                    session.close(e.close_code(), e.reason(), None);
                    return;
                }
            }
        }
        if buf.is_empty() {
            // Release the buffer of an idle connection.
            buf = BytesMut::new();
        }
        fragment_deadline = match fragment_deadline {
            _ if !decoder.in_progress() => None,
            None => Some(Instant::now() + limits.ws_fragment_timeout),
            Some(d) => Some(d),
        };
        let readable = rd.readable();
        let readable = match fragment_deadline {
            None => readable.await,
            // Waiting for readability is cancel-safe: no data is lost when the timeout drops it.
            // Boxed: the timer lives only while a fragment is pending, so an idle connection's task stays small.
            Some(d) => match Box::pin(monoio::time::timeout_at(d.into(), readable)).await {
                Ok(r) => r,
                Err(_) => {
                    crate::debug!("socket {} fragmented message timed out", session.socket_id);
                    session.close(
                        frame::CLOSE_POLICY_VIOLATION,
                        "fragmented message not completed in time",
                        None,
                    );
                    return;
                }
            },
        };
        if readable.is_err() {
            return;
        }
        let chunk = core.take_read_buffer(READ_BUFFER_BYTES);
        let (res, chunk) = rd.read(chunk).await;
        let n = res.unwrap_or_default();
        if n > 0 {
            buf.extend_from_slice(&chunk[..n]);
            core.metrics().add(Counter::WsBytesReceived, n as u64);
        }
        core.return_read_buffer(chunk);
        if n == 0 {
            return;
        }
    }
}

/// Returns false when reading should stop.
async fn on_message(core: &Core, session: &Rc<Session>, msg: Message) -> bool {
    match msg {
        Message::Text(text) => {
            if !session.is_closing() {
                // Boxed: the handler's state is large and only lives while a message is handled, so an idle
                // connection's task does not carry it.
                Box::pin(handler::handle_text(core, session, &text)).await;
            }
        }
        // Binary frames are not part of the protocol: ignored (docs/protocol.md#framing).
        Message::Binary(_) => {}
        Message::Ping(payload) => {
            session.outbox.push_pong(frame::encode_pong(&payload));
        }
        Message::Pong(_) => {}
        Message::Close { code, .. } => {
            // RFC 6455 §5.5.1: answer with a Close (echoing the code), then stop reading.
            let code = code
                .filter(|c| frame::is_valid_close_code(*c))
                .unwrap_or(close::NORMAL);
            session.echo_close(code);
            return false;
        }
    }
    true
}
