#!/bin/bash
# Cross-node fan-out against a single node, same run (BENCHMARKS.md). Run from the repository root after
# `cargo build --release -p relay -p relay-loadgen`; needs redis-server and redis-cli.
# Alternating single-node and 2-node runs; subscribers on A (pinned CPU 0), publishes to B (cluster) or A (single)
set -u
R=target/release/relay; L=target/release/relay-loadgen
ARGS="fanout --subscribers 1000 --channels 10 --rate 1000 --duration 10 --publishers 8 --pipeline 1 --pin-cpus 1 --quiet"
redis-server --port 6390 --save "" --appendonly no > /dev/null 2>&1 & RP=$!
sleep 0.5
for round in 1 2 3; do
  taskset -c 0 $R --port 6101 --workers 1 --host 127.0.0.1 > /dev/null 2>&1 & A=$!
  sleep 0.5
  taskset -c 1 $L $ARGS --port 6101 --server-pid $A > /tmp/single-$round.json 2>/dev/null
  kill $A; wait $A 2>/dev/null
  taskset -c 0 env RELAY_REDIS_URL=redis://127.0.0.1:6390/ RELAY_NODE_ID=a $R --port 6101 --workers 1 --host 127.0.0.1 > /tmp/node-a.log 2>&1 & A=$!
  taskset -c 1 env RELAY_REDIS_URL=redis://127.0.0.1:6390/ RELAY_NODE_ID=b $R --port 6102 --workers 1 --host 127.0.0.1 > /tmp/node-b.log 2>&1 & B=$!
  sleep 0.5
  redis-cli -p 6390 CONFIG RESETSTAT > /dev/null
  taskset -c 1 $L $ARGS --port 6101 --publish-port 6102 --server-pid $A > /tmp/cluster-$round.json 2>/dev/null
  curl -s localhost:6101/stats > /tmp/stats-a-$round.json; curl -s localhost:6102/stats > /tmp/stats-b-$round.json
  redis-cli -p 6390 INFO stats | grep -E "total_commands_processed|pubsub" > /tmp/redis-$round.txt
  kill $A $B; wait $A $B 2>/dev/null
done
kill $RP
python3 - <<'PY'
import json,statistics
def load(p): return json.load(open(p))
rows=[]
for kind in ['single','cluster']:
    d=[load(f'/tmp/{kind}-{r}.json') for r in (1,2,3)]
    cpu=[x['server_cpu']['per_delivery_us'] for x in d]
    p99=[x['latency_us']['p99'] for x in d]; p50=[x['latency_us']['p50'] for x in d]
    lost=[x['deliveries_lost'] for x in d]
    print(kind,'cpu/delivery',cpu,'p99',p99,'p50',p50,'lost',lost)
    rows.append((statistics.median(cpu),statistics.median(p99),statistics.median(p50)))
print('ratios cluster/single: cpu %.2f p99 %.2f p50 %.2f'%(rows[1][0]/rows[0][0],rows[1][1]/rows[0][1],rows[1][2]/rows[0][2]))
print('p99 difference ms', (rows[1][1]-rows[0][1])/1000)
for r in (1,2,3):
    a=load(f'/tmp/stats-a-{r}.json'); b=load(f'/tmp/stats-b-{r}.json')
    c=load(f'/tmp/cluster-{r}.json')
    print('round',r,'B published',b['cluster']['published'],'A received',a['cluster']['received'],'loadgen acked', c.get('publishes_acked', c.get('acked')), open(f'/tmp/redis-{r}.txt').read().split())
PY
