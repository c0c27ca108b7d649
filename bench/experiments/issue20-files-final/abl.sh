#!/bin/bash
# the file paths and cache limits on io_uring, against epoll. SIZES from the env.
S=/tmp/f20m/duet
for f in $SIZES; do
 echo "== $f"
 python3 /tmp/f20m/wrkrun2.py --path /$f --rounds 2 --secs 4 --conns 64,256 \
  "epoll=$S serve --engine epoll --threads 1 --port 18091 --dir /tmp/f20m/d@18091" \
  "uring=$S serve --engine uring --threads 1 --port 18092 --dir /tmp/f20m/d@18092" \
  "uring-mem=$S serve --engine uring --threads 1 --port 18093 --max-cached-file 32MiB --dir /tmp/f20m/d@18093" \
  "uring-splice=$S serve --engine uring --threads 1 --port 18094 --uring-features splice --dir /tmp/f20m/d@18094" \
  "uring-read=$S serve --engine uring --threads 1 --port 18095 --uring-features no-sendfile --dir /tmp/f20m/d@18095"
done
