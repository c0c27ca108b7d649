#!/bin/bash
# small responses (13 B), uring of main at 1aa034c against uring of this branch, 256 connections
date -u
for d in 1 16; do
python3 /work/shared/bench/wrkrun.py --conns 256 --depth $d --rounds 3 --secs 5 \
  "uring-base=/tmp/i20m/duet-base serve --engine uring --threads 1 --port 18081@18081" \
  "uring-i20=/tmp/i20m/duet serve --engine uring --threads 1 --port 18082@18082"
done
date -u
