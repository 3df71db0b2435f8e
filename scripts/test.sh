#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs coord with its test and
# backend extras, installs and starts real etcd, ZooKeeper and Redis servers on
# 127.0.0.1 (Debian packages), each also with TLS and authentication, and the
# tests' Consul emulator; runs pytest against all of them, stops them.
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[all,test,bench]'
python3 scripts/servers.py start
if [ "${KEEP_SERVERS:-0}" != 1 ]; then
  trap 'python3 scripts/servers.py stop' EXIT
fi
eval "$(python3 scripts/servers.py env)"
export COORD_REQUIRE_SERVERS=1
python3 -m pytest "$@"
