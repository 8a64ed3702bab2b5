#!/usr/bin/env bash
# Installs what this project needs and a fresh Debian machine lacks. Safe to run again.
set -euo pipefail

need=()
pkgs=(libhiredis-dev redis-server redis-tools pkg-config nginx docker-compose curl openssl)
# Optional groups, named in SETUP_GROUPS: `bench` adds Nchan (the benchmark's comparison
# point), wrk (the publish-wrk scenario) and perf (bench/profile.sh); `clients` adds Chromium
# and pip for the browser and Python client tests.
for group in ${SETUP_GROUPS:-}; do
  case $group in
    bench) pkgs+=(libnginx-mod-nchan python3 wrk linux-perf) ;;
    # Node (18+, Debian's nodejs) runs the Node client's tests; a node already on PATH will do.
    clients) pkgs+=(chromium python3 python3-venv); command -v node >/dev/null 2>&1 || pkgs+=(nodejs) ;;
    *) echo "setup: unknown group $group" >&2; exit 2 ;;
  esac
done
# hiredis for the Redis client, redis-server for tests and the native cluster, nginx for the
# native cluster's load balancer, docker-compose (v1) to validate docker-compose.yml.
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Install without starting services (redis-server, nginx): this project starts its own.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  if [ $had_policy -eq 0 ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; fi
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
  if [ $had_policy -eq 0 ]; then rm -f "$policy"; fi
fi

if ! command -v swift >/dev/null 2>&1; then
  for dir in /opt/swift/usr/bin /opt/swift/bin; do
    [ -x "$dir/swift" ] && export PATH="$dir:$PATH"
  done
fi
command -v swift >/dev/null 2>&1 || { echo "setup: Swift 6 toolchain not found on PATH" >&2; exit 1; }
