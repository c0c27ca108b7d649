#!/bin/bash
# perf of the server CPU (0) while wrk (CPU 1) fetches $PATHF with 64 conns: $1 name, rest serve args
S=/tmp/f20m/duet; name=$1; shift
taskset -c 0 $S serve --threads 1 --port 18098 --dir /tmp/f20m/d "$@" 2>/dev/null & sp=$!
sleep 0.5
taskset -c 1 wrk -t1 -c64 -d6s http://127.0.0.1:18098/$PATHF > /tmp/f20m/perf-$name.wrk & wp=$!
sleep 1
perf record -q -g -p $sp -o /tmp/f20m/perf-$name.data -- sleep 4 2>/dev/null
wait $wp; grep Requests/sec /tmp/f20m/perf-$name.wrk; kill $sp; wait $sp 2>/dev/null
