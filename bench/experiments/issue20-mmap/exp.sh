#!/bin/bash
# what io_uring's sendfile path does per call, varied one thing at a time (duet-x: env
# knobs DUET_X_SHARE=KiB per connection and turn, DUET_X_NOMORE head without MSG_MORE,
# DUET_X_RINGHEAD head by a ring send, then sendfile), against epoll.
X=/tmp/i20m/duet-x
date -u
for f in $SIZES; do
 echo "== $f"
 python3 /tmp/i20m/wrkrun2.py --path /$f --rounds ${ROUNDS:-2} --secs ${SECS:-4} --conns ${CONNS:-64,256} \
  "epoll=$X serve --engine epoll --threads 1 --port 18091 --dir /tmp/i20m/d@18091" \
  "uring=$X serve --engine uring --threads 1 --port 18092 --dir /tmp/i20m/d@18092" \
  "u-share256k=env DUET_X_SHARE=256 $X serve --engine uring --threads 1 --port 18093 --dir /tmp/i20m/d@18093" \
  "u-share128k=env DUET_X_SHARE=128 $X serve --engine uring --threads 1 --port 18094 --dir /tmp/i20m/d@18094" \
  "u-nomore=env DUET_X_NOMORE=1 $X serve --engine uring --threads 1 --port 18095 --dir /tmp/i20m/d@18095" \
  "u-ringhead=env DUET_X_RINGHEAD=1 $X serve --engine uring --threads 1 --port 18096 --dir /tmp/i20m/d@18096"
done
date -u
