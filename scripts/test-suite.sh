#!/usr/bin/env bash
# The whole suite, in four parts run at the same time:
#   scripts/test-suite.sh PYTHON [PYTEST ARGS...]      TEST_POSTGRES=0 runs everything on SQLite instead
#   store     the Django tests on SQLite                    (TEST_PART=store)
#   engine    tests/agents, tests/sandbox, tests/onboarding (TEST_PART=engine: the engine never imports
#             Django, so they touch no database and run once)
#   postgres  the Django tests again, on a throwaway PostgreSQL server (scripts/test-postgres.sh)
#   browser   tests/e2e, Chromium against a running store on its own throwaway PostgreSQL, the production
#             database (their store is the same code on either, so they run once)
# Measured: the suite spends most of its time waiting (sandboxes starting, live servers, Chromium, Celery
# workers), not computing — on SQLite the Django tests took 6 CPU-minutes in 19 wall-minutes — so parts side
# by side fill the machine's cores. Each test run keeps its state in a folder of its own
# (tests/environment.py) and every server it starts listens on a free port, so the parts cannot meet.
# The store part prints as it goes; the others print when they are done, in the order above.
set -uo pipefail
python=$1
shift
cd "$(dirname "$0")/.."

explain() {  # pytest's exit code 5 means it collected nothing: fine for a part when tests were named
  if (($1 == 5)); then
    if (($# > 1)); then return 0; fi
    echo "no tests ran" >&2
  fi
  return "$1"
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
names=(engine)
TEST_PART=engine "$python" -m pytest "$@" >"$logs/engine" 2>&1 &
pids=($!)
if [[ ${TEST_POSTGRES:-1} != 0 ]]; then
  names+=(postgres browser)
  TEST_PART=store scripts/test-postgres.sh "$python" -m pytest "$@" >"$logs/postgres" 2>&1 &
  pids+=($!)
  TEST_PART=browser scripts/test-postgres.sh "$python" -m pytest "$@" >"$logs/browser" 2>&1 &
  pids+=($!)
  store_part=(env TEST_PART=store)
else
  store_part=(env TEST_PART=)  # everything but the engine, browser tests included
fi

echo "== The store's tests on SQLite (the engine's$([[ ${TEST_POSTGRES:-1} != 0 ]] && echo ", on PostgreSQL and in the browser") run at the same time and print below)"
if [[ ${TEST_POSTGRES:-1} != 0 ]]; then
  "${store_part[@]}" "$python" -m pytest "$@"
else
  "${store_part[@]}" "$python" -m pytest --ignore=tests/agents --ignore=tests/sandbox --ignore=tests/onboarding "$@"
fi
explain $? "$@"
status=$?

declare -A titles=([engine]="The engine's tests (tests/agents, tests/sandbox, tests/onboarding)"
  [postgres]="The store's tests on PostgreSQL" [browser]="The browser tests (tests/e2e) on PostgreSQL")
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  code=$?
  echo "== ${titles[${names[$i]}]}"
  cat "$logs/${names[$i]}"
  explain "$code" "$@" || status=1
done
exit "$status"
