#!/bin/bash
date -u
export BIN=/tmp/i20m/duet-x
for PATHF in f256 f1024 f16384; do export PATHF
XENV= /tmp/i20m/perf.sh epoll --engine epoll
XENV= /tmp/i20m/perf.sh uring --engine uring
[ $PATHF != f16384 ] && XENV=DUET_X_RINGHEAD=1 /tmp/i20m/perf.sh ringhead --engine uring
[ $PATHF != f256 ] && XENV= /tmp/i20m/perf.sh mmap --engine uring --uring-features mmap
done
date -u
