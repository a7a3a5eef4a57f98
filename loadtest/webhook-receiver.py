#!/usr/bin/env python3
"""A webhook receiver for load tests: answers every POST with 200 at once (HTTP/1.1 keep-alive) and counts the
requests and events it got; prints the counts every 5 s and on exit.

  loadtest/webhook-receiver.py --port 7777
  relay --webhook-url http://127.0.0.1:7777/hooks --webhook-events channel_occupied,channel_vacated,...
"""

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"requests": 0, "events": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            n = len(json.loads(body)["events"])
        except (ValueError, KeyError):
            n = 0
        with lock:
            counts["requests"] += 1
            counts["events"] += n
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def report():
    with lock:
        print(json.dumps(counts), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=7777)
    a = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: (report(), sys.exit(0)))

    def tick():
        while True:
            time.sleep(5)
            report()

    threading.Thread(target=tick, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
