#!/bin/bash
# duet load's latency tail against io_uring at 256 KiB and 1 MiB: load threads 1 and 2,
# against wrk, and with a 256 KiB share (duet-x), epoll beside
X=/tmp/i20m/duet-x
date -u
for f in ${SIZES:-f1024}; do
for s in "epoll|--engine epoll" "uring|--engine uring" "uring-share256|--engine uring|DUET_X_SHARE=256" "uring-mmap|--engine uring --uring-features mmap"; do
  IFS='|' read name args envs <<< "$s"
  env $envs taskset -c 0 $X serve --threads 1 --port 18070 --dir /tmp/i20m/d $args 2>/dev/null & sp=$!
  sleep 0.5
  for t in 1 2; do
    r=$(taskset -c 1 /tmp/i20m/duet load -t $t -c 64 -d 4s --json http://127.0.0.1:18070/$f 2>/dev/null)
    echo "$f $name load -t$t: $(echo "$r" | python3 -c 'import json,sys; j=json.load(sys.stdin); l=j["latency_us"]; print(round(j["requests_per_sec"]), "req/s", {k:l[k] for k in ("p50","p90","p99","p999","max")}, "errors", j["errors"])')"
  done
  w=$(taskset -c 1 wrk -t1 -c64 -d4s --latency http://127.0.0.1:18070/$f)
  echo "$f $name wrk: $(echo "$w" | grep -E 'Requests/sec' ) p50 $(echo "$w" | awk '/^ +50%/{print $2}') p90 $(echo "$w" | awk '/^ +90%/{print $2}') p99 $(echo "$w" | awk '/^ +99%/{print $2}') max $(echo "$w" | awk '/Latency /{print $4}')"
  kill $sp; wait $sp 2>/dev/null
done
done
date -u
