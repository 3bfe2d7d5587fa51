#!/usr/bin/env bash
# Install what is missing, build, and start `evstore serve` on ./evstore-data (RESP port 7379,
# loopback only). Talk to it with `redis-cli -p 7379`; stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build
echo "evstore: starting on 127.0.0.1:7379 (RESP) and :7380 (HTTP), data in ${EVSTORE_DATA:-./evstore-data}" >&2
echo "evstore: try  redis-cli -p 7379 XADD events '*' source cli type demo payload '{\"hi\":1}'" >&2
echo "evstore:      redis-cli -p 7379 XREVRANGE events + - COUNT 50" >&2
echo "evstore:      curl 'localhost:7380/streams/events/events?reverse=1&limit=50'" >&2
exec ./build/evstore serve "$@"
