#!/bin/bash
# Server-side profile at one size: where one server thread's CPU goes (epoll, uring).
# usage: pserv.sh FILE CONNS
D=target/release/duet
F=$1; C=$2
mkdir -p out
for e in epoll uring; do
  taskset -c 0 $D serve --engine $e --threads 1 --port 18821 --dir /tmp/f16 2>/dev/null &
  sp=$!
  for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18821/$F && break; sleep 0.1; done
  taskset -c 1 $D load -c $C -t 1 -d 6s http://127.0.0.1:18821/$F > out/$F-$C-$e.load 2>&1 &
  lp=$!
  sleep 1.5
  perf record -q -g -p $sp -o /tmp/ps-$e.data -- sleep 3 2>/dev/null
  wait $lp
  kill $sp; wait $sp 2>/dev/null
  {
  echo "== $e $F c=$C"; grep -E "Requests/sec" out/$F-$C-$e.load
  perf report -i /tmp/ps-$e.data --children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | grep -E "sendfile|do_splice_direct|tcp_sendmsg|io_uring_enter|epoll_wait|handle_softirqs|tcp_v4_rcv|tcp_ack|\[\.\] |do_syscall_64|__x64_sys_io_uring|release_sock|tcp_write_xmit|__tcp_transmit_skb|loopback_xmit|net_rx_action" | head -40
  perf report -i /tmp/ps-$e.data --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -5
  } > out/$F-$C-$e.perf
done
