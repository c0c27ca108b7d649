#!/usr/bin/env python3
# Interleaved rounds: req/s and server CPU per request, file bodies, epoll vs uring variants.
import subprocess, sys, time, re, os, socket, statistics
D="target/release/duet"
files=sys.argv[1].split(','); conns=[int(c) for c in sys.argv[2].split(',')]; rounds=int(sys.argv[3]); secs=sys.argv[4]
variants=[("epoll",["--engine","epoll"],{}),("uring",["--engine","uring"],{})]
for v in sys.argv[5:]:
    eng,k=v.split(':'); variants.append((f"{eng}-lowat{k}",["--engine",eng],{"XLOWAT":k}))
res={}
def wait(port):
    for _ in range(100):
        try: socket.create_connection(("127.0.0.1",port),0.2).close(); return
        except OSError: time.sleep(0.05)
for r in range(rounds):
  for f in files:
    for c in conns:
      for name,args,env in variants:
        port=18850+len(res)%40+100*r
        e=dict(os.environ); e.update(env)
        sp=subprocess.Popen(["taskset","-c","0",D,"serve","--threads","1","--port",str(port),"--dir","/tmp/f16"]+args,env=e,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
        wait(port)
        out=subprocess.run(["taskset","-c","1",D,"load","-c",str(c),"-t","1","-d",secs,"--warmup","1s","--server-pid",str(sp.pid),f"http://127.0.0.1:{port}/{f}"],capture_output=True,text=True); out=out.stdout+out.stderr
        sp.kill(); sp.wait()
        if "us/request" not in out: print("FAIL",name,f,c,repr(out[-300:])); continue
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)",out).group(1))
        cpu=float(re.search(r"([\d.]+)us/request",out).group(1))
        res.setdefault((f,c,name),[]).append((rps,cpu))
for (f,c,name),v in res.items():
    base=res[(f,c,"epoll")]
    mc=statistics.median(x[1] for x in v); mr=statistics.median(x[0] for x in v)
    bc=statistics.median(x[1] for x in base); br=statistics.median(x[0] for x in base)
    print(f"{f:12} c={c:<4} {name:18} cpu {mc:8.1f} ({mc/bc:.2f}x)  req/s {mr:8.1f} ({mr/br:.2f}x)  rounds cpu {[round(x[1]) for x in v]} rps {[round(x[0]) for x in v]}")
