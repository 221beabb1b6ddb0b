#!/usr/bin/env bash
# Run a command, usually the test suite, against a throwaway PostgreSQL server (Debian's package, 15):
#   scripts/test-postgres.sh .venv/bin/python -m pytest [ARGS...]
# The server gets a free loopback port and a temporary folder; the command sees TEST_DATABASE_URL
# (tests/environment.py turns it into DATABASE_URL; Django creates and drops test_store). The server is
# stopped and its folder removed however the command ends, and the command's exit code is returned.
set -euo pipefail
if (($# == 0)); then
  echo "usage: $0 PYTHON -m pytest [ARGS...]" >&2
  exit 2
fi
python=$1
if [[ $python == */* ]]; then python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"; fi
command -v "$python" >/dev/null || python=python3
cd "$(dirname "$0")/.."
exec "$python" -m tests.services postgres -- "$python" "${@:2}"
