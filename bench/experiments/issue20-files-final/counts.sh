#!/bin/bash
# per-request counters of one server under wrk: $1=name $2.. = serve args; PATHF from env
S=/tmp/f20m/duet
name=$1; shift
taskset -c 0 $S serve --threads 1 --port 18099 --metrics /metrics --dir /tmp/f20m/d "$@" 2>/dev/null & sp=$!
sleep 0.5
m0=$(curl -s http://127.0.0.1:18099/metrics)
taskset -c 1 wrk -t1 -c${C:-64} -d3s http://127.0.0.1:18099/$PATHF | grep Requests/sec
m1=$(curl -s http://127.0.0.1:18099/metrics)
python3 - "$name" "$m0" "$m1" <<'PY'
import sys,re
def p(t): return {m.group(1):float(m.group(2)) for m in re.finditer(r"^(duet_\w+_total) ([\d.e+]+)$", t, re.M)}
a,b=p(sys.argv[2]),p(sys.argv[3]); r=b["duet_requests_total"]-a["duet_requests_total"]
print(sys.argv[1], "req", int(r), " ".join(f"{k[5:-6]}={(b[k]-a[k])/r:.2f}" for k in ["duet_wakeups_total","duet_events_total","duet_syscalls_total","duet_partial_writes_total"]))
PY
kill $sp; wait $sp 2>/dev/null
