#!/usr/bin/env python3
"""Run wrk against servers side by side, pinned server->cpu0, wrk->cpu1.

Usage: wrkrun.py [--conns 64,256] [--secs 5] [--depth 1] [--rounds 1] NAME=CMD@PORT ...
Prints one row per (server, conns): req/s, p50/p99 latency, server CPU us/request.
Servers are interleaved round by round so machine drift hits all alike.
"""
import argparse, os, re, shlex, signal, socket, subprocess, sys, time, json

def cpu_ticks(pid):
    total = 0
    for p in [pid] + children(pid):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total

def children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(x) for x in open(f"/proc/{pid}/task/{t}/children").read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out + [g for c in out for g in children(c)]

def wait_port(port, t=10):
    end = time.time() + t
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return True
        except OSError:
            time.sleep(0.05)
    return False

def parse_lat(s):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", s)
    if not m:
        raise ValueError(f"unreadable wrk latency {s!r}")
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7, "h": 3.6e9}[m.group(2)]

def run_wrk(port, conns, secs, depth, path):
    env = dict(os.environ, DEPTH=str(depth))
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "5s"]
    if depth > 1:
        cmd += ["-s", os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline.lua")]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    import resource; ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for attempt in range(2):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env).stdout
        if re.search(r"Requests/sec:", out) and re.search(r"^\s+99%", out, re.M):
            break
        print(f"wrk gave no figures (attempt {attempt + 1}): {out.strip()[-300:]}", file=sys.stderr)
    else:
        raise RuntimeError(f"wrk failed against port {port}")
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN); global WRKCPU; WRKCPU = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / secs
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_lat(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = parse_lat(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errs = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p50, p99, (errs.group(1) if errs else ""), (int(non2xx.group(1)) if non2xx else 0)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", default="64,256")
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--path", default="/")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("servers", nargs="+")
    a = ap.parse_args()
    servers = []
    for s in a.servers:
        name, rest = s.split("=", 1); cmd, port = rest.rsplit("@", 1)
        servers.append((name, cmd, int(port)))
    procs = {}
    results = {}
    try:
        for name, cmd, port in servers:
            p = subprocess.Popen(["taskset", "-c", "0"] + shlex.split(cmd), stdout=subprocess.DEVNULL,
                                 stderr=open(f"/tmp/wrkrun-{name}.err", "w"), start_new_session=True)
            procs[name] = p
            if not wait_port(port):
                print(f"{name}: did not listen on {port}", file=sys.stderr); sys.exit(2)
        hz = os.sysconf("SC_CLK_TCK")
        for r in range(a.rounds):
            for c in [int(x) for x in a.conns.split(",")]:
                for name, cmd, port in servers:
                    t0 = cpu_ticks(procs[name].pid)
                    rps, p50, p99, errs, non2xx = run_wrk(port, c, a.secs, a.depth, a.path)
                    t1 = cpu_ticks(procs[name].pid)
                    cpu_s = (t1 - t0) / hz
                    us_per_req = cpu_s * 1e6 / (rps * a.secs) if rps else float("nan")
                    results.setdefault((name, c), []).append((rps, p50, p99, cpu_s / a.secs, us_per_req, errs, non2xx, WRKCPU))
    finally:
        for p in procs.values():
            try: os.killpg(p.pid, signal.SIGTERM)
            except OSError: pass
        for p in procs.values():
            try: p.wait(5)
            except Exception: os.killpg(p.pid, signal.SIGKILL)
    rows = []
    for (name, c), vals in results.items():
        vals.sort(key=lambda v: v[0])
        m = vals[len(vals) // 2]
        rows.append(dict(server=name, conns=c, depth=a.depth, rps=round(m[0]), p50_us=m[1], p99_us=m[2],
                         cpu_util=round(m[3], 3), cpu_us_per_req=round(m[4], 3), errors=m[5], non2xx=m[6], wrk_cpu=round(m[7],2), all_rps=[round(v[0]) for v in vals]))
    if a.json:
        print(json.dumps(rows))
    else:
        print(f"{'server':14} {'conns':>5} {'depth':>5} {'req/s':>10} {'p50us':>8} {'p99us':>8} {'cpu':>5} {'us/req':>7} {'wrkcpu':>6}  all-rps errors")
        for r in rows:
            print(f"{r['server']:14} {r['conns']:>5} {r['depth']:>5} {r['rps']:>10} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} {r['cpu_util']:>5.2f} {r['cpu_us_per_req']:>7.2f} {r['wrk_cpu']:>6.2f}  {r['all_rps']} {r['errors']}{' non2xx=' + str(r['non2xx']) if r['non2xx'] else ''}")

main()
