#!/usr/bin/env python3
"""One server, one load, one line: CMD (a server on 127.0.0.1:PORT) runs on CPU 0 and
`duet load -t1` on CPU 1.
  measure.py split NAME PORT CMD...              256 connections at depth 16, 1 s to settle,
      then 5 s: requests/s and the server's user and kernel CPU µs per request
      (/proc/PID/stat)
  measure.py lat NAME PORT CONNS DEPTH CMD...    3 s after 1 s of warm-up: requests/s, p50
      and p99 latency (µs) and the server's CPU µs per request (--server-pid)
Run from the repository root; DUET names the duet binary (target/release/duet)."""
import json, os, subprocess, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from benchlib import wait_port  # noqa: E402

DUET = os.environ.get("DUET", "target/release/duet")


def load(port, *args):
    cmd = ["taskset", "-c", "1", DUET, "load", "-t1", *args, f"http://127.0.0.1:{port}/"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def user_sys(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14 and 15)


mode, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
shape, cmd = (sys.argv[4:6], sys.argv[6:]) if mode == "lat" else ([], sys.argv[4:])
server = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    if not wait_port(port, timeout=10):
        sys.exit(f"{name}: the server was not listening on {port} after 10 s")
    if mode == "split":
        load(port, "-c256", "--depth", "16", "-d", "1s")
        (u0, s0) = user_sys(server.pid)
        n = json.loads(load(port, "-c256", "--depth", "16", "-d", "5s", "--json"))["requests"]
        (u1, s1) = user_sys(server.pid)
        hz = os.sysconf("SC_CLK_TCK")
        user, kernel = (u1 - u0) / hz * 1e6 / n, (s1 - s0) / hz * 1e6 / n
        print(f"{name} req/s={n / 5:.0f} user={user:.3f} sys={kernel:.3f} total={user + kernel:.3f} us/req")
    else:
        c, d = shape
        j = json.loads(load(port, f"-c{c}", "--depth", d, "-d", "3s", "--warmup", "1s", "--json",
                            "--server-pid", str(server.pid)))
        lat = j["latency_us"]
        print(f"{name:22} c{c} d{d} req/s={j['requests_per_sec']:.0f} p50={lat['p50']} p99={lat['p99']} "
              f"cpu_us={j['server']['cpu_us_per_req']:.3f}")
finally:
    server.kill()
    server.wait()
