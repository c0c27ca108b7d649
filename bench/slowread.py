#!/usr/bin/env python3
"""Slow-read attack: how long does a good client wait while slowhttptest -X runs?

Starts each server pinned to CPU 0 (optionally with a competing CPU-bound loop on CPU 0),
then, per run: slowhttptest in slow-read mode on CPU 1 (by default 4,000 connections,
1,000 new per second, each asking for a 1 MiB file with a 512-1024 byte receive window
and reading 32 bytes every 5 s), and meanwhile a good client on CPU 1 opening a fresh
connection for each of N requests of a small file. Prints, per run and server, the good
client's slowest and median time for a whole request (connect, send, full response), and
the medians over the runs. Servers are interleaved run by run, in a rotating order.

Needs: slowhttptest (apt-get install slowhttptest), taskset (util-linux), and nginx for
an nginx row; run as a user whose open-file limit allows the attack's connections (the
script raises its soft limit to the hard one).

Usage:
  bench/slowread.py [--runs 5] [--probes 80] [--busy] NAME=CMD@PORT[:PREFIX] ...

CMD is split like a shell would; `{dir}` in it becomes the directory of the served files,
which the script writes: /tmp/duet-bench-files/big.bin (1 MiB, attacked) and small.txt
(the good client's). PREFIX is the URL path of that directory on the server (none for
duet --dir, /files for bench/nginx.conf). For example, from the repository root:

  cargo build --release
  bench/slowread.py --busy --runs 5 \\
    "epoll=target/release/duet serve --engine epoll --threads 1 --port 18081 --dir {dir}@18081" \\
    "uring=target/release/duet serve --engine uring --threads 1 --port 18082 --dir {dir}@18082" \\
    "nginx=nginx -c $PWD/bench/nginx.conf -g 'master_process off;'@18083:/files"

--busy adds a CPU-bound loop on CPU 0 (`sh -c 'while :; do :; done'`, nice 0) for the
whole measurement: the server then gets about half of its CPU, as on a busy machine.
"""
import argparse
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

from benchlib import wait_port

FILES_DIR = "/tmp/duet-bench-files"  # bench/nginx.conf serves /files/ from here
BIG = "big.bin"
SMALL = "small.txt"


def write_files(big_size):
    os.makedirs(FILES_DIR, exist_ok=True)
    path = os.path.join(FILES_DIR, BIG)
    if not os.path.exists(path) or os.path.getsize(path) != big_size:
        with open(path, "wb") as f:
            f.write(os.urandom(big_size))
    with open(os.path.join(FILES_DIR, SMALL), "w") as f:
        f.write("small file for the good client\n")


def probe(port, path, timeout):
    """One request on a fresh connection; seconds until the whole response arrived,
    or None when it failed or took longer than `timeout`."""
    start = time.monotonic()
    deadline = start + timeout
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout)
    except OSError:
        return None
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = [ln.split(b":", 1)[1] for ln in head.split(b"\r\n")
                          if ln.lower().startswith(b"content-length:")]
                if length and len(body) >= int(length[0]):
                    break
        if not data.startswith(b"HTTP/1.1 200"):
            return None
        return time.monotonic() - start
    except OSError:
        return None
    finally:
        s.close()


def one_run(name, port, prefix, a):
    url = f"http://127.0.0.1:{port}{prefix}/{BIG}"
    attack = subprocess.Popen(
        ["taskset", "-c", "1", "slowhttptest", "-X", "-c", str(a.conns), "-r", str(a.rate),
         "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "1", "-p", "3",
         "-l", str(int(a.warmup + a.probes * (a.gap + 0.5) + 30)), "-u", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(a.warmup)  # the attack ramps up; probing starts during the ramp
        times = []
        for _ in range(a.probes):
            t = probe(port, f"{prefix}/{SMALL}", a.timeout)
            times.append(t if t is not None else float("inf"))
            time.sleep(a.gap)
        return times
    finally:
        os.killpg(attack.pid, signal.SIGKILL)
        attack.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--probes", type=int, default=80, help="good-client requests per run")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between good-client requests")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of attack before the first probe")
    ap.add_argument("--timeout", type=float, default=10.0, help="a probe slower than this counts as failed")
    ap.add_argument("--conns", type=int, default=4000, help="slowhttptest connections")
    ap.add_argument("--rate", type=int, default=1000, help="slowhttptest new connections per second")
    ap.add_argument("--big", type=int, default=1 << 20, help="size of the attacked file")
    ap.add_argument("--busy", action="store_true", help="a competing CPU-bound loop on CPU 0")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between runs")
    ap.add_argument("servers", nargs="+", help="NAME=CMD@PORT[:PREFIX]")
    a = ap.parse_args()

    write_files(a.big)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, a.conns + 1024)), hard))
    os.sched_setaffinity(0, {1})  # the good client shares CPU 1 with the attacker

    servers = []
    for s in a.servers:
        name, rest = s.split("=", 1)
        cmd, where = rest.rsplit("@", 1)
        port, _, prefix = where.partition(":")
        servers.append((name, cmd.replace("{dir}", FILES_DIR), int(port), prefix.rstrip("/")))

    procs = {}
    busy = None
    results = {name: [] for name, *_ in servers}
    try:
        for name, cmd, port, _ in servers:
            procs[name] = subprocess.Popen(
                ["taskset", "-c", "0"] + shlex.split(cmd), stdout=subprocess.DEVNULL,
                stderr=open(f"/tmp/slowread-{name}.err", "w"), start_new_session=True)
            if not wait_port(port):
                sys.exit(f"{name}: nothing listens on port {port} (see /tmp/slowread-{name}.err)")
        if a.busy:
            busy = subprocess.Popen(["taskset", "-c", "0", "sh", "-c", "while :; do :; done"],
                                    start_new_session=True)
        for run in range(a.runs):
            # Rotated each run: the first attack after a quiet spell costs the kernel the
            # most (it grows its slab caches), so no server is always first.
            for name, _, port, prefix in servers[run % len(servers):] + servers[:run % len(servers)]:
                if procs[name].poll() is not None:
                    sys.exit(f"{name} exited (see /tmp/slowread-{name}.err)")
                times = one_run(name, port, prefix, a)
                worst, median = max(times), statistics.median(times)
                failed = sum(t == float("inf") for t in times)
                results[name].append((worst, median, failed))
                print(f"run {run + 1} {name:14} slowest {fmt(worst)} median {fmt(median)}"
                      f"{f' failed {failed}' if failed else ''}", flush=True)
                time.sleep(a.settle)  # let the attack's sockets close
    finally:
        for p in list(procs.values()) + ([busy] if busy else []):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in list(procs.values()) + ([busy] if busy else []):
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    print(f"\n{a.runs} runs, {a.probes} fresh-connection requests each, busy CPU 0: {'yes' if a.busy else 'no'}")
    print(f"{'server':14} {'slowest (median of runs)':>25} {'slowest (range)':>22} {'median':>10} {'failed':>7}")
    for name, rows in results.items():
        worsts = [r[0] for r in rows]
        print(f"{name:14} {fmt(statistics.median(worsts)):>25} "
              f"{fmt(min(worsts)) + ' - ' + fmt(max(worsts)):>22} {fmt(statistics.median(r[1] for r in rows)):>10} "
              f"{sum(r[2] for r in rows):>7}")


def fmt(seconds):
    if seconds == float("inf"):
        return "failed"
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


if __name__ == "__main__":
    main()
