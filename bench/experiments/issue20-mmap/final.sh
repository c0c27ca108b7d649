#!/bin/bash
# the targets with the final build: epoll, uring (defaults), nginx (sendfile on, one worker)
S=/tmp/i20m/duet-final
date -u
for f in $SIZES; do
 echo "== $f"
 python3 /tmp/i20m/wrkrun2.py --path /$f --rounds ${ROUNDS:-2} --secs ${SECS:-4} --conns 64,256 \
  "epoll=$S serve --engine epoll --threads 1 --port 18091 --dir /tmp/i20m/d@18091" \
  "uring=$S serve --engine uring --threads 1 --port 18092 --dir /tmp/i20m/d@18092" \
  "nginx=nginx -c /tmp/i20m/nginx.conf -g 'master_process off;'@18090"
done
date -u
