#!/usr/bin/env bash
# Installs the Debian 12 packages lshattn builds with, when any is missing.
# Usage: tools/setup-deps.sh [extra packages...]
set -euo pipefail
need=(cmake g++ make libeigen3-dev libxsimd-dev xtl-dev doctest-dev libbenchmark-dev "$@")
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "lshattn: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
