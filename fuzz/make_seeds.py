#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/seed-*: a few valid inputs per target, in the byte layout
fuzz/harness.rs reads (a few leading parameter bytes, then NUL-separated fields). Run from anywhere."""
import hashlib, hmac, json, os, struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
KEY, SECRET = "app-key", "app-secret"            # AppConfig::default()
REST_KEY, REST_SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"  # harness::REST_*
SOCKET_ID = "1.2"                                  # harness::session()


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def sig(secret, msg):
    return hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest()


# http_head: mode, max_head (u16 le), max_headers, split (u16 le), request
def head(mode, req, split=20, max_head=16384, max_headers=64):
    return bytes([mode]) + struct.pack("<HBH", max_head, max_headers, split) + req


write("http_head", "ws-upgrade", head(0, b"GET /app/app-key?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\nHost: localhost:6001\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
write("http_head", "post-events", head(0, b'POST /apps/app-id/events?auth_key=app-key&auth_timestamp=1700000000&auth_version=1.0&body_md5=x&auth_signature=y HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n{"name":"e","channel":"c","data":"{}"}', split=200))
write("http_head", "pipelined", head(0, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /stats HTTP/1.0\r\nConnection: close\r\n\r\n", split=30))
write("http_head", "content-length", head(0x80, b" \t00042\t\x00 42"))
write("http_head", "cl-chunked", head(0x81, b"12\x0012"))


# ws_frames: mode byte (bits 5-7 pick the size limit, bits 0-1 the mode)
def frame(fin, op, payload, mask=b"\x37\xfa\x21\x3d"):
    n = len(payload)
    h = bytes([(0x80 if fin else 0) | op])
    if n <= 125:
        h += bytes([0x80 | n])
    elif n <= 0xFFFF:
        h += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        h += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return h + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


sub = json.dumps({"event": "pusher:subscribe", "data": {"channel": "my-channel"}}).encode()
raw = frame(True, 1, sub) + frame(False, 1, b'{"event":"pusher:') + frame(True, 9, b"hi") \
    + frame(True, 0, b'ping","data":{}}') + frame(True, 10, b"") + frame(True, 8, b"\x03\xe8bye \xe2\x9c\x93")
write("ws_frames", "raw-stream", bytes([5 << 5 | 0, 4, 1, 7, 30, 2]) + raw)
write("ws_frames", "raw-binary-300", bytes([6 << 5 | 1, 0]) + frame(True, 2, bytes(300)))


def spec(fin, op, payload, flags=0):
    return bytes([(0x80 if fin else 0) | op, flags]) + struct.pack("<H", len(payload)) + b"\x01\x02\x03\x04" + payload


write("ws_frames", "spec-fragments", bytes([5 << 5 | 2, 3, 5, 0, 17]) + spec(False, 1, b"x\xe2") + spec(True, 9, b"p")
      + spec(False, 0, b"\x82") + spec(True, 0, b"\xacy") + spec(True, 8, b"\x0f\xa0done"))
write("ws_frames", "unmask", bytes([3, 1, 2, 3, 4, 5]) + bytes(range(64)))


# client_message: flags byte, message
SIGN, SUBSCRIBED, SIGNED_IN, SMALL = 1, 2, 4, 8


def chan_auth(channel, data=None):
    s = f"{SOCKET_ID}:{channel}" + (f":{data}" if data is not None else "")
    return f"{KEY}:{sig(SECRET, s)}"


cd = json.dumps({"user_id": "42", "user_info": {"name": "Ada"}})
ud = json.dumps({"id": "7", "user_info": {"n": "x"}, "watchlist": ["1", "2", "3"]})
msgs = {
    "subscribe": (0, {"event": "pusher:subscribe", "data": {"auth": "", "channel": "my-channel"}}),
    "subscribe-recovery": (0, {"event": "pusher:subscribe", "data": {"channel": "cache-news", "last_event_id": "1700000000-42"}}),
    "subscribe-private": (0, {"event": "pusher:subscribe", "data": {"auth": chan_auth("private-x"), "channel": "private-x"}}),
    "subscribe-presence": (0, {"event": "pusher:subscribe", "data": {"auth": chan_auth("presence-room", cd), "channel": "presence-room", "channel_data": cd}}),
    "subscribe-string-data": (SIGN, {"event": "pusher:subscribe", "data": json.dumps({"channel": "presence-cache-r", "channel_data": cd})}),
    "unsubscribe": (0, {"event": "pusher:unsubscribe", "data": {"channel": "private-encrypted-x"}}),
    "server-to-user": (SIGNED_IN, {"event": "pusher:subscribe", "data": {"channel": "#server-to-user-7"}}),
    "ping": (0, {"event": "pusher:ping", "data": {}}),
    "signin": (0, {"event": "pusher:signin", "data": {"auth": f"{KEY}:{sig(SECRET, f'{SOCKET_ID}::user::{ud}')}", "user_data": ud}}),
    "signin-small": (SIGN | SMALL, {"event": "pusher:signin", "data": {"auth": "", "user_data": ud}}),
    "client-event": (SUBSCRIBED, {"event": "client-typing", "channel": "presence-room", "data": {"text": "héllo \u2603"}}),
    "client-event-string": (SUBSCRIBED | SMALL, {"event": "client-x", "channel": "private-a", "data": "just text"}),
}
for name, (flags, m) in msgs.items():
    write("client_message", name, bytes([flags]) + json.dumps(m, ensure_ascii=False).encode())


# rest_query_signature: mode, now (8 bytes le), method NUL path NUL query NUL body  |  mode 1: ... body NUL k NUL v ...
def rest_query(method, path, params, body, ts):
    md5 = hashlib.md5(body).hexdigest() if body else None
    p = {"auth_key": REST_KEY, "auth_timestamp": str(ts), "auth_version": "1.0", **({"body_md5": md5} if md5 else {}), **params}
    canon = "&".join(f"{k.lower()}={v}" for k, v in sorted(p.items(), key=lambda kv: (kv[0].lower(), kv[1])))
    s = sig(REST_SECRET, f"{method.upper()}\n{path}\n{canon}")
    from urllib.parse import quote
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in p.items()) + "&auth_signature=" + s


TS = 1700000000
body = json.dumps({"name": "my-event", "channel": "my-channel", "data": '{"message":"hello world"}'}).encode()
for name, (method, path, params, b) in {
    "post-events": ("POST", "/apps/app-id/events", {}, body),
    "get-channels": ("GET", "/apps/app-id/channels", {"filter_by_prefix": "presence-", "info": "user_count"}, b""),
    "get-channel-escaped": ("GET", "/apps/app-id/channels/private-%3Aa", {"info": "subscription_count,cache"}, b""),
}.items():
    q = rest_query(method, path, params, b, TS)
    write("rest_query_signature", name, bytes([2]) + struct.pack("<q", TS + 5) + f"{method}\0{path}\0{q}\0".encode() + b)
write("rest_query_signature", "sign", bytes([1]) + struct.pack("<q", TS) + b"POST\0/apps/1/events\0" + body + b"\0info\0user_count\0socket_id\0123.456")
write("rest_query_signature", "bad-escapes", bytes([0]) + struct.pack("<q", 0) + b"GET\0/a%zz\0a=%&b=+%2B+&a=2;c\0")


# rest_bodies: flags, channel NUL name NUL socket_id NUL info NUL body
def bodies(flags, b, channel="my-channel", name="my-event", socket_id="123.456", info="user_count"):
    return bytes([flags]) + f"{channel}\0{name}\0{socket_id}\0{info}\0".encode() + b


write("rest_bodies", "event", bodies(0, body))
write("rest_bodies", "event-channels", bodies(0, json.dumps({"name": "e", "channels": ["a", "presence-b", "private-c"], "data": {"x": [1, 2]}, "socket_id": "1.2", "info": "subscription_count,user_count"}).encode()))
write("rest_bodies", "batch", bodies(1, json.dumps({"batch": [{"name": "e", "channel": "a", "data": "1"}, {"name": "f", "channel": "private-encrypted-b", "data": "2", "info": "cache"}]}).encode()))
write("rest_bodies", "legacy", bodies(0, b'{"raw":"data"}', channel="presence-x", info=" cache , subscription_count"))
write("rest_bodies", "auth-presence", bodies(1, json.dumps({"socket_id": "123.456", "channel_name": "presence-r", "channel_data": cd}).encode()))
write("rest_bodies", "auth-encrypted", bodies(1, json.dumps({"socket_id": "1.2", "channel_name": "private-encrypted-x"}).encode()))

# apps_file
write("apps_file", "readme", json.dumps({"port": 6001, "workers": 2, "apps": [{"id": "1", "key": "k1", "secret": "s1", "max_connections": 1000, "client_events": True, "max_event_payload_bytes": 10240, "max_channels_per_publish": 100, "max_batch_size": 10, "max_presence_members": 100, "subscription_count": False, "cache_ttl_secs": 1800, "authorized_connections": False, "max_channels_per_connection": 1000, "encryption_master_key_base64": None}]}, indent=2))
write("apps_file", "two-apps", json.dumps({"host": "127.0.0.1", "port": 7001, "workers": 1, "debug": True, "activity_timeout": 120, "max_connections": 5, "apps": [{"id": "1", "key": "k1", "secret": "s1"}, {"id": "2", "key": "k2", "secret": "s2", "encryption_master_key_base64": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}))
write("apps_file", "ipv6", '{"host":"::1","workers":4,"apps":[]}')

# json_depth: max depth byte, max items byte, document
write("json_depth", "array", bytes([3, 5]) + b'[1, "a", {"b":[2]}, null, true, -1.5e3]')
write("json_depth", "strings", bytes([2, 1]) + b'["[[[[\\"[[[[", "{{{{", "\\\\"]')
write("json_depth", "nested-64", bytes([64, 2]) + b"[" * 64 + b"]" * 64)
write("json_depth", "nested-65", bytes([70, 2]) + b"{\"a\":" * 65 + b"0" + b"}" * 65)
