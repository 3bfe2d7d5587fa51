#!/usr/bin/env bash
# Install what is missing, build, and run the embedded demo on ./evstore-data: append two
# events with the CLI, read them back as JSON, verify the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build
data=${EVSTORE_DATA:-./evstore-data}
./build/evstore append --data "$data" demo source cli type demo.started payload '{"hello":"world"}'
./build/evstore append --data "$data" demo source cli type demo.finished payload '{"ok":true}'
./build/evstore dump --data "$data" demo --reverse --limit 50
./build/evstore verify --data "$data"
