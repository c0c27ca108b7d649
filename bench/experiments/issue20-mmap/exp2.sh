#!/bin/bash
# confirmation: the head by a ring send before sendfile (u-ringhead) against the head by
# sendmsg(MSG_MORE) from the loop (uring, the current default), epoll and nginx
X=/tmp/i20m/duet-x
date -u
for f in $SIZES; do
 echo "== $f"
 python3 /tmp/i20m/wrkrun2.py --path /$f --rounds ${ROUNDS:-2} --secs ${SECS:-4} --conns ${CONNS:-64,256} \
  "epoll=$X serve --engine epoll --threads 1 --port 18091 --dir /tmp/i20m/d@18091" \
  "uring=$X serve --engine uring --threads 1 --port 18092 --dir /tmp/i20m/d@18092" \
  "u-ringhead=env DUET_X_RINGHEAD=1 $X serve --engine uring --threads 1 --port 18096 --dir /tmp/i20m/d@18096" \
  "nginx=nginx -c /tmp/i20m/nginx.conf -g 'master_process off;'@18090"
done
date -u
