#!/bin/bash
# the server's threads (ls /proc/PID/task) idle and at their peak under wrk -c64 at 1 MiB, per file path
S=/tmp/i20m/duet
date -u
for feat in default splice mmap mmap-zc no-sendfile; do
taskset -c 0 $S serve --engine uring --uring-features $feat --threads 1 --port 18097 --dir /tmp/i20m/d 2>/dev/null & sp=$!
sleep 0.5; idle=$(ls /proc/$sp/task | wc -l)
taskset -c 1 wrk -t1 -c64 -d3s http://127.0.0.1:18097/f1024 > /dev/null & wp=$!
mx=0; for i in $(seq 25); do sleep 0.1; n=$(ls /proc/$sp/task | wc -l); [ $n -gt $mx ] && mx=$n; done
wait $wp; echo "$feat: idle $idle threads, peak $mx under wrk -c64 at 1 MiB ($(ls /proc/$sp/task | wc -l) after)"; kill $sp; wait $sp 2>/dev/null
done
