#!/usr/bin/env python3
"""Interleaved rounds of file bodies: requests/s and server CPU per request, epoll and
io_uring as built, plus variants given as arguments:
  SHARE/TURN    io_uring with its sendfile share and turn budget in KiB (share.patch)
  ENGINE:KIB    ENGINE with TCP_NOTSENT_LOWAT of KIB KiB on its listeners (lowat.patch)
usage: sf.py FILES CONNS ROUNDS SECS [VARIANT ...]   (from the repository root)"""
import os, re, statistics, subprocess, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from benchlib import wait_port  # noqa: E402

D = "target/release/duet"
files, conns = sys.argv[1].split(","), [int(c) for c in sys.argv[2].split(",")]
rounds, secs = int(sys.argv[3]), sys.argv[4]
variants = [("epoll", "epoll", {}), ("uring", "uring", {})]
for v in sys.argv[5:]:
    if "/" in v:
        share, turn = v.split("/")
        variants.append((f"uring-{share}/{turn}", "uring", {"XSF_SHARE": share, "XSF_TURN": turn}))
    else:
        engine, kib = v.split(":")
        variants.append((f"{engine}-lowat{kib}", engine, {"XLOWAT": kib}))


res = {}
for r in range(rounds):
    for f in files:
        for c in conns:
            for n, (name, engine, env) in enumerate(variants):
                port = 18850 + n
                server = [D, "serve", "--engine", engine, "--threads", "1", "--port", str(port), "--dir", "/tmp/f16"]
                sp = subprocess.Popen(["taskset", "-c", "0"] + server, env={**os.environ, **env},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if not wait_port(port, timeout=5):
                    print("FAIL", name, f, c, "the server was not listening after 5 s")
                    sp.kill(); sp.wait()
                    continue
                load = ["taskset", "-c", "1", D, "load", "-c", str(c), "-t", "1", "-d", secs, "--warmup", "1s",
                        "--server-pid", str(sp.pid), f"http://127.0.0.1:{port}/{f}"]
                done = subprocess.run(load, capture_output=True, text=True)
                out = done.stdout + done.stderr
                sp.kill(); sp.wait()
                if "us/request" not in out:
                    print("FAIL", name, f, c, repr(out[-300:]))
                    continue
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                cpu = float(re.search(r"([\d.]+)us/request", out).group(1))
                res.setdefault((f, c, name), []).append((rps, cpu))
for (f, c, name), v in res.items():
    base = res[(f, c, "epoll")]
    mc, mr = statistics.median(x[1] for x in v), statistics.median(x[0] for x in v)
    bc, br = statistics.median(x[1] for x in base), statistics.median(x[0] for x in base)
    print(f"{f:12} c={c:<4} {name:18} cpu {mc:8.1f} ({mc/bc:.2f}x)  req/s {mr:8.1f} ({mr/br:.2f}x)"
          f"  rounds cpu {[round(x[1]) for x in v]} rps {[round(x[0]) for x in v]}")
