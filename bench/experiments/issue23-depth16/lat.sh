#!/bin/bash
# lat.sh NAME PORT CONNS DEPTH CMD...: starts CMD on CPU 0, runs `duet load -cCONNS -t1
# --depth DEPTH -d 3s --warmup 1s --server-pid` on CPU 1, prints requests/s, p50 and p99
# latency (µs) and the server's CPU µs per request. Run from the repository root.
set -u
name=$1; port=$2; c=$3; d=$4; shift 4
duet=${DUET:-target/release/duet}
taskset -c 0 "$@" >/dev/null 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
out=$(taskset -c 1 "$duet" load -c"$c" -t1 --depth "$d" -d 3s --warmup 1s --json --server-pid $spid \
  "http://127.0.0.1:$port/")
python3 - "$name" "$out" <<'PY'
import json, sys
name, out = sys.argv[1:]
j = json.loads(out); l = j["latency_us"]
print(f"{name:22} c{j['connections']} d{j['depth']} req/s={j['requests_per_sec']:.0f} "
      f"p50={l['p50']} p99={l['p99']} cpu_us={j['server']['cpu_us_per_req']:.3f}")
PY
