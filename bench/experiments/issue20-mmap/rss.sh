#!/bin/bash
# base RSS per thread, main at 1aa034c against this branch (idle_rss.py: after a warm-up)
date -u
for t in 1 2 4; do
python3 /work/shared/bench/idle_rss.py 1000 \
  "base-uring-t$t=/tmp/i20m/duet-base serve --engine uring --threads $t --port 18083@18083" \
  "i20-uring-t$t=/tmp/i20m/duet serve --engine uring --threads $t --port 18084@18084" \
  "base-epoll-t$t=/tmp/i20m/duet-base serve --engine epoll --threads $t --port 18085@18085" \
  "i20-epoll-t$t=/tmp/i20m/duet serve --engine epoll --threads $t --port 18086@18086"
done
