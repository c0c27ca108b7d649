#!/bin/bash
# perf record -g of the server (CPU 0) while wrk (CPU 1, -c$C) fetches /$PATHF: $1 name, rest serve args
S=${BIN:-/tmp/i20m/duet}; name=$1; shift
env $XENV taskset -c 0 $S serve --threads 1 --port 18098 --dir /tmp/i20m/d "$@" 2>/dev/null & sp=$!
sleep 0.5
taskset -c 1 wrk -t1 -c${C:-64} -d7s http://127.0.0.1:18098/$PATHF > /tmp/i20m/perf-$name-$PATHF.wrk & wp=$!
sleep 1
t0=$(awk '{print $14+$15}' /proc/$sp/stat)
perf record -q -g -p $sp -o /tmp/i20m/perf-$name-$PATHF.data -- sleep 5 2>/dev/null
t1=$(awk '{print $14+$15}' /proc/$sp/stat)
wait $wp; echo "$name $PATHF: $(grep Requests/sec /tmp/i20m/perf-$name-$PATHF.wrk) server ticks $((t1-t0)) in 5 s"; kill $sp; wait $sp 2>/dev/null
