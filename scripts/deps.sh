#!/usr/bin/env bash
# Install what evstore needs to build, test and fuzz, if anything is missing (Debian 12, root).
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev liblmdb-dev lmdb-utils libevent-dev
      libmsgpack-dev zlib1g-dev libdeflate-dev libcriterion-dev libjansson-dev redis-tools redis-server python3 python3-redis curl
      wrk procps fiu-utils e2fsprogs util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
