//! Bad input never panics, never grows memory without bound, and never harms other clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn malformed_http_is_400_and_the_server_keeps_serving() {
    let server = Server::start();
    let r = raw(server.port, b"THIS IS NOT HTTP\r\n\r\n");
    assert_eq!(parse_response(&r).0, 400, "{r}");
    let r = raw(server.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n");
    assert_eq!(parse_response(&r).0, 400, "{r}");
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20000));
    let r = raw(server.port, &big);
    assert_eq!(parse_response(&r).0, 431, "{r}");
    let r = raw(server.port, b"POST /apps/app-id/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(parse_response(&r).0, 411, "{r}");
    let r = raw(
        server.port,
        b"POST /apps/app-id/events HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
    );
    assert_eq!(parse_response(&r).0, 413, "{r}");
    assert_eq!(http(server.port, "GET", "/health", "").0, 200);
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let server = Server::start();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /stats HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "404"], "{out}");
}

#[test]
fn slowloris_head_times_out() {
    let server = Server::start();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost:").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let start = Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.contains(" 408 "), "{out}");
    assert!(start.elapsed() < Duration::from_secs(14));
}

#[test]
fn unmasked_frames_close_with_1002() {
    let server = Server::start();
    let mut c = server.client();
    c.send_frame(1, br#"{"event":"pusher:ping"}"#, true, false);
    let (code, _) = c.expect_close();
    assert_eq!(code, Some(1002));
}

#[test]
fn oversized_message_closes_with_1009_right_after_the_header() {
    let server = Server::start();
    let mut c = server.client();
    // Announce 1 GiB and send nothing more: the server must refuse on the header alone.
    let mut f = vec![0x81, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 30).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    c.stream.write_all(&f).unwrap();
    assert_eq!(c.expect_close().0, Some(1009));
}

#[test]
fn invalid_utf8_closes_with_1007_and_fragments_reassemble() {
    let server = Server::start();
    let mut c = server.client();
    c.send_frame(1, br#"{"event":"pus"#, false, true);
    c.send_frame(9, b"mid", true, true);
    c.send_frame(0, br#"her:ping"}"#, true, true);
    let pong = c.recv_frame();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"mid"[..]));
    c.expect_event("pusher:pong");
    c.send_frame(1, b"\xff\xfe", true, true);
    assert_eq!(c.expect_close().0, Some(1007));
}

#[test]
fn slow_reader_is_cut_off_while_others_keep_receiving() {
    let server = Server::start_with(&["--max-outbound-queue-bytes", "65536"], &[]);
    let mut slow = server.client();
    slow.subscribe("flood");
    // Shrink the slow socket's receive buffer so the kernel absorbs less of the flood for it.
    set_small_rcvbuf(&slow.stream);
    let mut fast: Vec<_> = (0..4).map(|_| server.client()).collect();
    for f in &mut fast {
        f.subscribe("flood");
    }
    // Random letters: still about 6 KB on the wire when the suite runs with compression (RELAY_TEST_DEFLATE=1).
    let payload = incompressible(8000);
    // 8 MB (about 6 MB compressed): more than the kernel's socket buffers on both ends plus the 64 KiB queue cap.
    let total = 1000;
    let mut handles = Vec::new();
    for f in fast.drain(..) {
        handles.push(std::thread::spawn(move || {
            let mut f = f;
            for i in 0..total {
                let e = f.expect_event("big");
                assert!(
                    e.data_str().ends_with(&format!(";{i}")),
                    "in order, none lost"
                );
            }
            f
        }));
    }
    for i in 0..total {
        let (status, _) = server.publish("flood", "big", &format!("{payload};{i}"));
        assert_eq!(status, 200);
    }
    let fast: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // The slow reader was cut off (its session is gone, and the periodic summary logs it) while the fast ones
    // got everything. The session leaves after the close grace (3 s) at the latest.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (_, stats) = http(server.port, "GET", "/stats", "");
        if stats.contains(r#""connections":4"#) && server.log().contains("slow reader") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow reader still connected or not logged: {stats}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(slow);
    drop(fast);
    assert_eq!(http(server.port, "GET", "/health", "").0, 200);
}

fn set_small_rcvbuf(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: setsockopt on a live socket with a correctly sized int.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[test]
fn a_slow_but_live_reader_is_told_4100_before_being_cut() {
    let server = Server::start_with(&["--max-outbound-queue-bytes", "65536"], &[]);
    let mut slow = server.client();
    slow.subscribe("lag");
    let payload = incompressible(8000);
    let mut sent = 0;
    while !server.log().contains("slow reader") {
        assert!(sent < 5000, "never cut off");
        assert_eq!(server.publish("lag", "big", &payload).0, 200);
        sent += 1;
    }
    // Catch up now: the backlog ends with pusher:error 4100 and Close 4100.
    let mut saw_error = false;
    loop {
        let f = slow
            .try_recv_frame(Duration::from_secs(3))
            .expect("stream ended without a Close frame");
        match f.opcode {
            1 if f.payload.starts_with(br#"{"event":"pusher:error""#) => {
                assert!(String::from_utf8_lossy(&f.payload).contains("4100"));
                saw_error = true;
            }
            8 => {
                assert_eq!(close_of(&f), Some(4100));
                break;
            }
            _ => {}
        }
    }
    assert!(saw_error);
}

#[test]
fn a_head_trickled_a_byte_at_a_time_still_times_out() {
    let server = Server::start_with(&["--http-read-timeout", "1"], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let head =
        b"GET /health HTTP/1.1\r\nHost: example\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut out = Vec::new();
    // One byte every 200 ms: each read is well within a per-read timeout, the request as a whole is not.
    for b in head {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf)
            && n > 0
        {
            out.extend_from_slice(&buf[..n]);
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(" 408 "), "expected 408, got {text:?}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
}
