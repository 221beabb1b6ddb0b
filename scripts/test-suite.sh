#!/usr/bin/env bash
# The whole suite: on SQLite, and at the same time on a throwaway PostgreSQL server (scripts/test-postgres.sh).
#   scripts/test-suite.sh PYTHON [PYTEST ARGS...]      TEST_POSTGRES=0 skips the PostgreSQL pass
# Much of the suite waits (sandboxes starting, live servers, Chromium, Celery workers) rather than computes,
# so the two passes share the machine well; each test run keeps its state in a folder of its own
# (tests/environment.py) and every server it starts listens on a free port, so they cannot meet. The
# PostgreSQL pass prints its output when it is done, after the SQLite pass's, so the two never interleave.
# The PostgreSQL pass leaves out tests/agents and tests/sandbox (the engine never imports Django, so those
# tests touch no database and would only run twice) and tests/onboarding (whole builds in the sandbox, whose
# database use is the same as tests/test_pipeline.py's, which it does run). The browser tests (tests/e2e) run
# once, in the PostgreSQL pass, the production database: their store is the same code on either, and running
# them there keeps the two passes about as long as each other.
set -uo pipefail
python=$1
shift
cd "$(dirname "$0")/.."

explain() {  # pytest's exit code 5 means it collected nothing: say so rather than leave a bare failure
  if (($1 == 5)); then echo "no tests ran" >&2; fi
  return "$1"
}

pg_status=0
if [[ ${TEST_POSTGRES:-1} != 0 ]]; then
  pg_log=$(mktemp)
  trap 'rm -f "$pg_log"' EXIT
  scripts/test-postgres.sh "$python" -m pytest --ignore=tests/agents --ignore=tests/sandbox \
    --ignore=tests/onboarding "$@" >"$pg_log" 2>&1 &
  pg=$!
fi

if [[ ${TEST_POSTGRES:-1} != 0 ]]; then
  "$python" -m pytest --ignore=tests/e2e "$@"
else
  "$python" -m pytest "$@"
fi
explain $?
sqlite_status=$?

if [[ ${TEST_POSTGRES:-1} != 0 ]]; then
  wait "$pg"
  pg_status=$?
  echo "== The same suite on PostgreSQL (run at the same time as the one above)"
  cat "$pg_log"
  explain "$pg_status"
  pg_status=$?
fi
((sqlite_status == 0 && pg_status == 0))
