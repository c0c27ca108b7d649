#!/bin/bash
# epoll, uring (defaults), nginx (sendfile on): the target table. SIZES from the env.
S=/tmp/f20m/duet
for f in $SIZES; do
 echo "== $f"
 python3 /tmp/f20m/wrkrun2.py --path /$f --rounds 3 --secs 5 --conns 64,256 \
  "epoll=$S serve --engine epoll --threads 1 --port 18091 --dir /tmp/f20m/d@18091" \
  "uring=$S serve --engine uring --threads 1 --port 18092 --dir /tmp/f20m/d@18092" \
  "nginx=nginx -c /tmp/f20m/nginx.conf -g 'master_process off;'@18090"
done
