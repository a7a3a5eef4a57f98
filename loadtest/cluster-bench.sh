#!/bin/bash
# Cross-node fan-out, same run (BENCHMARKS.md): alternating rounds of (1) one relay node, (2) two relay nodes with
# the subscribers on node A and the publishes sent to node B, and, with SOCKUDO_BIN set, (3) two sockudo nodes with
# its Redis adapter in the same arrangement. Node A pinned to CPU 0; node B, Redis and the generator on CPU 1.
# Run from the repository root after `cargo build --release -p relay -p relay-loadgen`; needs redis-server and
# redis-cli. SOCKUDO_BIN: a sockudo 5.2.0 built with `--no-default-features --features local,redis`.
set -u
R=target/release/relay; L=target/release/relay-loadgen
ROUNDS=${ROUNDS:-3}
ARGS="fanout --subscribers 1000 --channels 10 --rate 1000 --duration 10 --publishers 8 --pipeline 1 --pin-cpus 1 --quiet"
OUT=${OUT:-/tmp/cluster-bench}
mkdir -p "$OUT"
redis-server --port 6390 --save "" --appendonly no > /dev/null 2>&1 & RP=$!
sleep 0.5

sockudo_config() { # port
  cat > "$OUT/sockudo-$1.json" <<JSON
{"debug":false,"host":"127.0.0.1","port":$1,
 "adapter":{"driver":"redis","redis":{"prefix":"sockudo_adapter:","redis_pub_options":{"url":"redis://127.0.0.1:6390/0"},"redis_sub_options":{"url":"redis://127.0.0.1:6390/0"}}},
 "cache":{"driver":"redis","redis":{"prefix":"sockudo_cache:"}},"queue":{"driver":"none"},"metrics":{"enabled":false},
 "database":{"redis":{"host":"127.0.0.1","port":6390}},
 "rate_limiter":{"enabled":false,"driver":"memory"},
 "app_manager":{"driver":"memory","array":{"apps":[{"id":"app-id","key":"app-key","secret":"app-secret","enabled":true,
   "enable_client_messages":true,"max_connections":1000000,"max_backend_events_per_sec":10000000,
   "max_client_events_per_sec":10000000,"max_read_req_per_sec":10000000}]}}}
JSON
}

wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

for round in $(seq "$ROUNDS"); do
  taskset -c 0 $R --port 6101 --workers 1 --host 127.0.0.1 > /dev/null 2>&1 & A=$!
  wait_port 6101
  taskset -c 1 $L $ARGS --port 6101 --server-pid $A > "$OUT/single-$round.json" 2>/dev/null
  kill $A; wait $A 2>/dev/null

  redis-cli -p 6390 FLUSHALL > /dev/null
  taskset -c 0 env RELAY_REDIS_URL=redis://127.0.0.1:6390/ RELAY_NODE_ID=a RELAY_METRICS_PORT=0 $R --port 6101 --workers 1 --host 127.0.0.1 > "$OUT/node-a.log" 2>&1 & A=$!
  taskset -c 1 env RELAY_REDIS_URL=redis://127.0.0.1:6390/ RELAY_NODE_ID=b RELAY_METRICS_PORT=0 $R --port 6102 --workers 1 --host 127.0.0.1 > "$OUT/node-b.log" 2>&1 & B=$!
  wait_port 6101; wait_port 6102
  redis-cli -p 6390 CONFIG RESETSTAT > /dev/null
  taskset -c 1 $L $ARGS --port 6101 --publish-port 6102 --server-pid $A > "$OUT/cluster-$round.json" 2>/dev/null
  curl -s localhost:6101/stats > "$OUT/stats-a-$round.json"; curl -s localhost:6102/stats > "$OUT/stats-b-$round.json"
  redis-cli -p 6390 INFO commandstats | grep -E "cmdstat_publish:" > "$OUT/redis-$round.txt"
  kill $A $B; wait $A $B 2>/dev/null

  if [ -n "${SOCKUDO_BIN:-}" ]; then
    redis-cli -p 6390 FLUSHALL > /dev/null
    sockudo_config 6201; sockudo_config 6202
    taskset -c 0 env TOKIO_WORKER_THREADS=1 REDIS_URL=redis://127.0.0.1:6390/0 "$SOCKUDO_BIN" --config "$OUT/sockudo-6201.json" > "$OUT/sockudo-a.log" 2>&1 & A=$!
    taskset -c 1 env TOKIO_WORKER_THREADS=1 REDIS_URL=redis://127.0.0.1:6390/0 "$SOCKUDO_BIN" --config "$OUT/sockudo-6202.json" > "$OUT/sockudo-b.log" 2>&1 & B=$!
    wait_port 6201; wait_port 6202; sleep 1
    redis-cli -p 6390 CONFIG RESETSTAT > /dev/null
    taskset -c 1 $L $ARGS --port 6201 --publish-port 6202 --server-pid $A > "$OUT/sockudo-$round.json" 2>/dev/null
    redis-cli -p 6390 INFO commandstats | grep -E "cmdstat_publish:" > "$OUT/sockudo-redis-$round.txt"
    kill $A $B; wait $A $B 2>/dev/null
  fi
done
kill $RP
OUT="$OUT" ROUNDS="$ROUNDS" python3 - <<'PY'
import json, os, statistics
out, rounds = os.environ["OUT"], int(os.environ["ROUNDS"])
def load(p):
    try: return json.load(open(p))
    except Exception: return None
rows = {}
for kind in ["single", "cluster", "sockudo"]:
    d = [x for x in (load(f"{out}/{kind}-{r}.json") for r in range(1, rounds + 1)) if x and x.get("server_cpu")]
    if not d: continue
    med = lambda f: statistics.median(f(x) for x in d)
    rows[kind] = dict(cpu=med(lambda x: x["server_cpu"]["per_delivery_us"]), p99=med(lambda x: x["latency_us"]["p99"]),
                      p50=med(lambda x: x["latency_us"]["p50"]), lost=max(x["deliveries_lost"] for x in d))
    print(kind, rows[kind])
for r in range(1, rounds + 1):
    for kind, f in [("relay", f"{out}/redis-{r}.txt"), ("sockudo", f"{out}/sockudo-redis-{r}.txt")]:
        if os.path.exists(f): print("round", r, kind, "redis", open(f).read().strip())
s, c = rows.get("single"), rows.get("cluster")
if s and c:
    print("relay 2 nodes / 1 node: cpu %.2f p99 %.2f (+%.1f ms)" % (c["cpu"] / s["cpu"], c["p99"] / s["p99"], (c["p99"] - s["p99"]) / 1000))
k = rows.get("sockudo")
if c and k:
    print("relay cluster / sockudo cluster: cpu %.2f p99 %.2f p50 %.2f" % (c["cpu"] / k["cpu"], c["p99"] / k["p99"], c["p50"] / k["p50"]))
PY
