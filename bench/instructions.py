#!/usr/bin/env python3
"""Protocol instructions per request: deterministic, unlike CPU time on a busy machine.

Runs each server under callgrind, counting only inside duet-http's
`Connection::handle_input` (parse, route, render the response into the output), sends N
pipelined requests on one connection (batches of 50, each batch's responses read before
the next), stops the server and prints the instructions counted divided by N. Syscalls
and the kernel are not counted: this isolates what a change to the protocol code costs.

Needs valgrind. Usage:
  bench/instructions.py [-n 10000] [-H 'Accept-Encoding: gzip'] [--path /] NAME=CMD@PORT ...
e.g.
  bench/instructions.py plain="target/release/duet serve --engine epoll --threads 1 --port 18601@18601" \\
      headers="target/release/duet serve --engine epoll --threads 1 --port 18602 --header 'X-A: b'@18602"
"""
import argparse, os, re, shlex, signal, socket, subprocess, sys, tempfile, time

from benchlib import wait_port


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("-H", "--header", action="append", default=[])
    ap.add_argument("--path", default="/")
    ap.add_argument("servers", nargs="+")
    a = ap.parse_args()
    extra = "".join(f"{h}\r\n" for h in a.header)
    req = f"GET {a.path} HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\nAccept: */*\r\n{extra}\r\n".encode()
    batch = 50
    for spec in a.servers:
        name, rest = spec.split("=", 1)
        cmd, port = rest.rsplit("@", 1)
        out = tempfile.NamedTemporaryFile(prefix="callgrind-", delete=False).name
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                "--toggle-collect=*Connection*handle_input*"] + shlex.split(cmd)
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if not wait_port(int(port)):
                sys.exit(f"{name}: did not listen on {port}")
            s = socket.create_connection(("127.0.0.1", int(port)))
            buf = b""
            for _ in range(a.n // batch):
                s.sendall(req * batch)
                buf = read_responses(s, buf, batch)
            s.close()
        finally:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(60)
        text = open(out).read()
        os.unlink(out)
        total = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
        print(f"{name:16} {total / (a.n // batch * batch):8.1f} instructions per request")


main()
