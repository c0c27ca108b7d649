#!/bin/bash
# every file path at each of $SIZES, 64 and 256 connections, interleaved: epoll, nginx
# (sendfile on, one worker), and io_uring by sendfile (default), splice, mmap, mmap-zc,
# no-sendfile (chunk buffer).
S=/tmp/i20m/duet
date -u
for f in $SIZES; do
 echo "== $f"
 python3 /tmp/i20m/wrkrun2.py --path /$f --rounds ${ROUNDS:-2} --secs ${SECS:-4} --conns 64,256 \
  "epoll=$S serve --engine epoll --threads 1 --port 18091 --dir /tmp/i20m/d@18091" \
  "uring=$S serve --engine uring --threads 1 --port 18092 --dir /tmp/i20m/d@18092" \
  "uring-splice=$S serve --engine uring --threads 1 --port 18094 --uring-features splice --dir /tmp/i20m/d@18094" \
  "uring-mmap=$S serve --engine uring --threads 1 --port 18095 --uring-features mmap --dir /tmp/i20m/d@18095" \
  "uring-mmapzc=$S serve --engine uring --threads 1 --port 18096 --uring-features mmap-zc --dir /tmp/i20m/d@18096" \
  "uring-read=$S serve --engine uring --threads 1 --port 18097 --uring-features no-sendfile --dir /tmp/i20m/d@18097" \
  "nginx=nginx -c /tmp/i20m/nginx.conf -g 'master_process off;'@18090"
done
date -u
