#!/usr/bin/env python3
"""What watching --dir costs: how long a change takes to be served, and what changes
cost the requests being served meanwhile.

  bench/watch.py latency    [--files N] [--changes 100] [--how inplace|rename]
  bench/watch.py throughput [--files N] [--every 0.1] [--rounds 3] [--seconds 5]

The tree is N files of 4 KiB, 100 per directory, plus probe.txt. The server runs on
CPU 0 with one worker thread (taskset), this script and wrk on CPU 1.

latency: writes probe.txt (rewritten in place, or written under a hidden name and
renamed into place), then asks for /probe.txt on a keep-alive connection, as fast as
it answers, until the new content comes back; prints the median, p90, p99 and max of
change -> served over --changes changes, and the CPU time the watcher thread used per
change (from /proc: unlike the wall times, it does not grow when the machine is busy).

throughput: wrk -t1 -c32 on /d0/f0.txt for --seconds, with no change, then with one
file rewritten every --every seconds, interleaved over --rounds rounds; prints
requests/s of each run and the median ratio. Run nothing else on the machine meanwhile
(on a shared machine, hold its measurement lock: flock LOCKFILE bench/watch.py ...).
"""
import argparse, http.client, os, re, shutil, statistics, subprocess, sys, tempfile, threading, time
from benchlib import wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_tree(files):
    d = tempfile.mkdtemp(prefix="duet-watch-bench-")
    body = b"x" * 4096
    for i in range(files):
        sub = os.path.join(d, f"d{i // 100}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i % 100}.txt"), "wb") as f:
            f.write(body)
    with open(os.path.join(d, "probe.txt"), "w") as f:
        f.write("start\n")
    return d


def start(duet, engine, port, tree, extra=()):
    cmd = ["taskset", "-c", "0", duet, "serve", "--engine", engine, "--threads", "1", "--port", str(port),
           "--log-level", "warn", tree, *extra]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    if not wait_port(port):
        p.kill()
        sys.exit("the server did not start")
    return p


def write(path, data, how):
    if how == "inplace":
        with open(path, "w") as f:
            f.write(data)
    else:
        tmp = os.path.join(os.path.dirname(path), ".probe.tmp")
        with open(tmp, "w") as f:
            f.write(data)
        os.rename(tmp, path)


def thread_cpu(pid, name):
    """CPU seconds (user + system) used so far by the thread of `pid` called `name`."""
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read()
        if stat[stat.index("(") + 1:stat.rindex(")")] == name:
            fields = stat[stat.rindex(")") + 2:].split()
            return (int(fields[11]) + int(fields[12])) / tick
    return 0.0


def latency(a):
    tree = make_tree(a.files)
    server = start(a.duet, a.engine, a.port, tree)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", a.port)
        samples = []
        cpu0 = thread_cpu(server.pid, "duet-watch")
        for i in range(a.changes):
            want = f"version {i}\n"
            t0 = time.perf_counter()
            write(os.path.join(tree, "probe.txt"), want, a.how)
            while True:
                conn.request("GET", "/probe.txt")
                if conn.getresponse().read().decode() == want:
                    break
                if time.perf_counter() - t0 > 30:
                    sys.exit(f"change {i} not served within 30 s")
            samples.append((time.perf_counter() - t0) * 1000)
        cpu = (thread_cpu(server.pid, "duet-watch") - cpu0) / a.changes * 1000
        samples.sort()
        q = lambda f: samples[min(len(samples) - 1, int(f * len(samples)))]
        print(f"{a.engine}, {a.files} files, {a.how}, {len(samples)} changes: change -> served "
              f"median {statistics.median(samples):.1f} ms, p90 {q(0.9):.1f} ms, p99 {q(0.99):.1f} ms, "
              f"max {samples[-1]:.1f} ms; watcher CPU {cpu:.1f} ms per change")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tree)


def wrk(port, seconds):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s",
                          f"http://127.0.0.1:{port}/d0/f0.txt"], capture_output=True, text=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def throughput(a):
    tree = make_tree(a.files)
    server = start(a.duet, a.engine, a.port, tree)
    try:
        wrk(a.port, 1)  # warm up
        quiet, busy, ratios = [], [], []
        for r in range(a.rounds):
            q = wrk(a.port, a.seconds)
            stop = threading.Event()

            def change():
                i = 0
                while not stop.wait(a.every):
                    write(os.path.join(tree, f"d{(i // 100) % max(1, a.files // 100)}", f"f{i % 100}.txt"),
                          f"change {i}\n" + "y" * 4000, "inplace")
                    i += 1

            t = threading.Thread(target=change)
            t.start()
            b = wrk(a.port, a.seconds)
            stop.set()
            t.join()
            quiet.append(q)
            busy.append(b)
            ratios.append(b / q)
            print(f"round {r + 1}: no change {q:.0f} req/s, a change every {a.every} s {b:.0f} req/s ({b / q:.3f}x)")
        print(f"{a.engine}, {a.files} files: median ratio {statistics.median(ratios):.3f}x "
              f"(no change {statistics.median(quiet):.0f} req/s, changing {statistics.median(busy):.0f} req/s)")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tree)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["latency", "throughput"])
    p.add_argument("--duet", default=os.path.join(ROOT, "target/release/duet"))
    p.add_argument("--engine", default="epoll")
    p.add_argument("--port", type=int, default=18190)
    p.add_argument("--files", type=int, default=100)
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--how", choices=["inplace", "rename"], default="inplace")
    p.add_argument("--every", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    a = p.parse_args()
    os.sched_setaffinity(0, {1})
    latency(a) if a.what == "latency" else throughput(a)


if __name__ == "__main__":
    main()
