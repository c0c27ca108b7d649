#!/usr/bin/env python3
"""Usage: DUET=target/release/duet bench/c100k.py ENGINE PORT [PROCESSES [CONNECTIONS]]

100,000 connections (or CONNECTIONS), a tenth active at 5,000 req/s: duet serve --processes 6
against duet load --processes 6, server on CPU 0, load on CPU 1 (docs/ladder.md, "Measured:
100,000 connections in process groups"). Prints one JSON line. Run it under the measuring
lock; wait for TIME_WAIT sockets to clear (/proc/net/sockstat) between runs."""
import json, os, re, subprocess, sys, time, socket
engine, port = sys.argv[1], int(sys.argv[2])
procs = int(sys.argv[3]) if len(sys.argv) > 3 else 6
total = int(sys.argv[4]) if len(sys.argv) > 4 else 100000
DUET = os.environ.get("DUET", "target/release/duet")
WARM, DUR = (60 if total > 20000 else 15), 10
def meminfo():
    m = {}
    for l in open("/proc/meminfo"):
        k, v = l.split(":"); m[k] = int(v.split()[0])
    return m
def sockstat():
    return open("/proc/net/sockstat").read().replace("\n", " | ")
def kids(pid):
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try: out += [int(x) for x in open(f"/proc/{pid}/task/{t}/children").read().split()]
        except OSError: pass
    return out
def ticks(pids):
    t = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split(); t += int(f[11]) + int(f[12])
        except OSError: pass
    return t
def rss(pids):
    r = 0
    for p in pids:
        for l in open(f"/proc/{p}/status"):
            if l.startswith("VmRSS:"): r += int(l.split()[1]) * 1024
    return r
m0 = meminfo(); s0 = sockstat()
srv = subprocess.Popen(["taskset", "-c", "0", DUET, "serve", "--engine", engine, "--processes", str(procs), "--threads", "1",
                        "--port", str(port), "--log-level", "warn",
                        "--header-timeout", "300s", "--keepalive-timeout", "300s"], stdin=subprocess.DEVNULL)
for _ in range(200):
    try: socket.create_connection(("127.0.0.1", port), 0.2).close(); break
    except OSError: time.sleep(0.05)
children = []
for _ in range(200):
    children = kids(srv.pid)
    if len(children) == procs: break
    time.sleep(0.1)
time.sleep(1)
load = subprocess.Popen(["taskset", "-c", "1", DUET, "load", "--processes", str(procs), "-c", str(total // 10), "--idle", str(total - total // 10),
                         "-R", "5000", "--warmup", f"{WARM}s", "-d", f"{DUR}s", "--timeout", "30s", "--json",
                         f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
t0 = time.time()
time.sleep(WARM - 5)
m1 = meminfo(); s1 = sockstat(); rss1 = rss(children)
time.sleep(5)
c0 = ticks(children); w0 = time.time()
time.sleep(DUR)
c1 = ticks(children); w1 = time.time()
out, _ = load.communicate()
srv.terminate(); srv.wait()
v = json.loads(out)
hz = os.sysconf("SC_CLK_TCK")
cpu_s = (c1 - c0) / hz
req = v["requests"]
print(json.dumps({
    "engine": engine, "processes": procs, "requests": req, "duration_s": v["duration_s"],
    "mean_us": v["latency_us"]["mean"], "p99_us": v["latency_us"]["p99"], "errors": v["errors"], "lost": v["lost"],
    "idle_held": v["idle_held"], "server_cpu_s_approx": cpu_s, "server_busy": cpu_s / (w1 - w0),
    "cpu_us_per_req_approx": cpu_s * 1e6 / req * (v["duration_s"] / (w1 - w0)) if req else None,
    "slab_kb_delta": m1["Slab"] - m0["Slab"], "sockstat_before": s0, "sockstat_during": s1,
    "server_rss_bytes": rss1, "server_rss_per_conn": rss1 / total, "connections": total,
}))
