#!/usr/bin/env python3
"""Instructions per request under callgrind: deterministic, unlike CPU time on a busy machine.

Runs each server under callgrind and, for each request kind, sends N pipelined requests on
one connection (`--depth` at a time, 50 by default, each batch's responses read before the
next) after a warm-up, with the counters zeroed after the warm-up (`callgrind_control -z`) and dumped after
the last batch (`callgrind_control -d`). Two figures per request:

- whole: every user-space instruction of the process (the engine's loop, the syscall
  wrappers, the HTTP layer, allocation), the `totals:` of the dump;
- handle_input: the inclusive cost of duet-http's `Connection::handle_input` (parse,
  route, queue the response), 0 for a server that has none.

The kernel is not counted. The request kinds:
- minimal: `GET / HTTP/1.1` with Host, User-Agent and Accept (59 bytes);
- browser: `GET /` with the eleven fields a browser sends on a navigation (about 500 bytes).

Needs valgrind. Usage:
  bench/instructions.py [-n 5000] [--depth 50] [--request minimal|browser] [-H 'Name: value'] [--path /]
                        [--keep DIR] NAME=CMD@PORT ...
(--keep: the dumps stay, for `callgrind_annotate DIR/NAME-REQUEST.callgrind`.)
e.g.
  bench/instructions.py epoll="target/release/duet serve --engine epoll --threads 1 --port 18601@18601"
"""
import argparse, glob, os, re, shlex, signal, socket, subprocess, sys, tempfile

from benchlib import wait_port


BROWSER = (
    "Host: localhost:8080\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=6f1c2a9e4b7d8c3f0a5e1b2d; theme=dark\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "Sec-Fetch-Dest: document\r\n"
    "Sec-Fetch-Mode: navigate\r\n"
    "Sec-Fetch-Site: none\r\n"
)


def request(kind, path, extra):
    fields = "Host: x\r\nUser-Agent: bench\r\nAccept: */*\r\n" if kind == "minimal" else BROWSER
    return f"GET {path} HTTP/1.1\r\n{fields}{extra}\r\n".encode()


def read_responses(sock, buf, n):
    """Reads n whole responses (Content-Length framed); returns the bytes left over."""
    while n:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            data = sock.recv(1 << 16)
            if not data:
                sys.exit("the server closed the connection")
            buf += data
            continue
        m = re.search(rb"\r\ncontent-length: *(\d+)", buf[:end], re.I)
        total = end + 4 + (int(m.group(1)) if m else 0)
        while len(buf) < total:
            data = sock.recv(1 << 16)
            if not data:
                sys.exit("the server closed the connection")
            buf += data
        buf = buf[total:]
        n -= 1
    return buf


def inclusive(dump, pattern):
    """The inclusive cost of the functions whose name matches `pattern`, from a dump."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", dump],
                         capture_output=True, text=True, check=True).stdout
    best = 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(", line)
        if m and re.search(pattern, line):
            best = max(best, int(m.group(1).replace(",", "")))
    return best


def measure(cmd, port, req, n, batch, keep=None, extra_args=()):
    """(whole-process, handle_input) instructions for n requests `req` to the server `cmd`."""
    tmp = tempfile.mkdtemp(prefix="callgrind-")
    out = os.path.join(tmp, "callgrind.out")
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *extra_args] + shlex.split(cmd)
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not wait_port(int(port)):
            sys.exit(f"{cmd}: did not listen on {port}")
        s = socket.create_connection(("127.0.0.1", int(port)))
        buf = b""
        for _ in range(max(50 // batch, 1)):  # warm-up: buffers, pools and caches settle
            s.sendall(req * batch)
            buf = read_responses(s, buf, batch)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
        for _ in range(n // batch):
            s.sendall(req * batch)
            buf = read_responses(s, buf, batch)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
        s.close()
    finally:
        # The io_uring engine does not exit cleanly under valgrind on SIGTERM; the dump
        # above is all that is needed.
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(60)
    dumps = [f for f in glob.glob(out + "*") if os.path.getsize(f) > 0 and f != out]
    dumps = dumps or [out]
    dump = max(dumps, key=os.path.getmtime)
    text = open(dump).read()
    whole = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
    handle = inclusive(dump, re.escape("Connection::handle_input ["))
    if keep:
        os.replace(dump, keep)
    for f in glob.glob(os.path.join(tmp, "*")):
        os.unlink(f)
    os.rmdir(tmp)
    return whole, handle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--depth", type=int, default=50, help="requests sent at once, their responses read before the next")
    ap.add_argument("--request", choices=["minimal", "browser"], action="append")
    ap.add_argument("-H", "--header", action="append", default=[])
    ap.add_argument("--path", default="/")
    ap.add_argument("--keep", metavar="DIR", help="keep each dump as DIR/NAME-REQUEST.callgrind")
    ap.add_argument("--callgrind-arg", action="append", default=[], help="passed to valgrind, e.g. --dump-instr=yes")
    ap.add_argument("servers", nargs="+")
    a = ap.parse_args()
    extra = "".join(f"{h}\r\n" for h in a.header)
    n = max(a.n // a.depth, 1) * a.depth
    print(f"{'server':16} {'request':8} {'whole':>8} {'handle_input':>12}  (instructions per request, n={n}, depth {a.depth})")
    for spec in a.servers:
        name, rest = spec.split("=", 1)
        cmd, port = rest.rsplit("@", 1)
        for kind in a.request or ["minimal", "browser"]:
            keep = a.keep and os.path.join(a.keep, f"{name}-{kind}.callgrind")
            whole, handle = measure(cmd, port, request(kind, a.path, extra), n, a.depth, keep, a.callgrind_arg)
            print(f"{name:16} {kind:8} {whole / n:8.1f} {handle / n:12.1f}", flush=True)


main()
