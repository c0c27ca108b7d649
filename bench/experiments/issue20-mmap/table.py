import re,sys
rows={}
order=[]
size=None
for fn in sys.argv[1:]:
    for line in open(fn):
        m=re.match(r"== f(\d+)",line)
        if m: size=int(m.group(1)); continue
        p=line.split()
        if len(p)>8 and p[1].isdigit() and size:
            name,c,rps,cpu,us,wrk=p[0],int(p[1]),int(p[3]),float(p[6]),float(p[7]),float(p[8])
            rows[(name,size,c)]=(us,rps,cpu,wrk)
            if name not in order: order.append(name)
sizes=sorted({k[1] for k in rows}); conns=[64,256]
lab={64:"64 KiB",256:"256 KiB",1024:"1 MiB",16384:"16 MiB"}
cols=[(s,c) for s in sizes for c in conns]
print("| path | "+" | ".join(f"{lab[s]}, {c}" for s,c in cols)+" |")
print("|---|"+"---|"*len(cols))
for n in order:
    cells=[]
    for s,c in cols:
        if (n,s,c) not in rows: cells.append("");continue
        us,rps,cpu,wrk=rows[(n,s,c)]; e=rows[("epoll",s,c)][0]
        cells.append(f"{us:,.0f} µs ({us/e:.2f}x), {rps:,}/s")
    print(f"| {n} | "+" | ".join(cells)+" |")
print()
print("server+client CPU per request (µs) and ratio to epoll's")
for n in order:
    cells=[]
    for s,c in cols:
        if (n,s,c) not in rows: cells.append("");continue
        us,rps,cpu,wrk=rows[(n,s,c)]; eu,er,ec,ew=rows[("epoll",s,c)]
        t=(cpu+wrk)*1e6/rps; te=(ec+ew)*1e6/er
        cells.append(f"{t:,.0f} ({t/te:.2f}x)")
    print(f"| {n} | "+" | ".join(cells)+" |")
