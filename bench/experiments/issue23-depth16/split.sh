#!/bin/bash
# split.sh NAME PORT CMD...: starts CMD (a server listening on 127.0.0.1:PORT) on CPU 0,
# drives it with `duet load -c256 -t1 --depth 16` on CPU 1 (1 s to settle, then 5 s
# measured) and prints its user and kernel CPU time per request from /proc/PID/stat.
# Run from the repository root after `cargo build --release`.
set -u
name=$1; port=$2; shift 2
duet=${DUET:-target/release/duet}
taskset -c 0 "$@" >/dev/null 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
taskset -c 1 "$duet" load -c256 -t1 --depth 16 -d 1s "http://127.0.0.1:$port/" >/dev/null 2>&1
before=$(awk '{print $14, $15}' /proc/$spid/stat)
out=$(taskset -c 1 "$duet" load -c256 -t1 --depth 16 -d 5s --json "http://127.0.0.1:$port/")
after=$(awk '{print $14, $15}' /proc/$spid/stat)
python3 - "$name" "$before" "$after" "$(getconf CLK_TCK)" "$out" <<'PY'
import json, sys
name, before, after, hz, out = sys.argv[1:]
n = json.loads(out)["requests"]
(u0, s0), (u1, s1) = [map(int, x.split()) for x in (before, after)]
user, sys_ = (u1 - u0) / int(hz) * 1e6 / n, (s1 - s0) / int(hz) * 1e6 / n
print(f"{name} req/s={n / 5:.0f} user={user:.3f} sys={sys_:.3f} total={user + sys_:.3f} us/req")
PY
