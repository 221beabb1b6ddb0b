"""The services a recipe's `[services]` asks for (PostgreSQL, Redis), run beside each sandboxed command.

Every `Sandbox.run` makes a network namespace of its own with only a loopback device, so a server
started by one command could never be reached by the next, nor could a server outside reach in. So the
services live inside each command's own sandbox: the command is wrapped in a small launcher (LAUNCHER,
run by the sandbox's /bin/sh) that

1. takes the build's services lock (flock on `<data>/.lock`): two commands of one build never run
   servers on the same data at once;
2. on first use, makes the data: `initdb` (trust authentication for the `sandbox` user, no fsync) and
   an `app` database; a `.ready` marker is written last, so a half-made folder is made again;
3. starts each server in the background on 127.0.0.1 only (its log in the data folder, never in the
   command's output), and waits until it answers (pg_isready, redis-cli ping), or prints one line
   "[sandbox: PostgreSQL did not start: …]" with the end of its log and exits 125;
4. runs the command, then stops the servers (PostgreSQL with a fast shutdown, so its files are clean
   for the next command) and exits with the command's own code.

The data folder is one per build (`services_dir`, seen inside at /services), kept between the build's
commands, so tables a setup command or a migration made are still there for the tests; another build
has its own folder and never sees it. Redis keeps nothing on disk. When a command is killed (timeout,
cancel), its pid namespace ends and the servers with it; the next command finds PostgreSQL's stale
postmaster.pid, which the lock proves stale, and PostgreSQL recovers from its log as after a crash.
The servers speed over durability (fsync off): the data lives as long as the build.

A live preview (agents/serve.py) runs its seed, and then its app, under the same launcher, on a folder
inside the instance's own data (`SERVED_DATA`, made by the launcher on first use): kept across stops,
wiped by a reset, one per instance, and on the instance's size-limited disk. Only a host crash could
leave it damaged (fsync off); resetting the instance's data makes it afresh.

Commands get the addresses in their environment (`environment()`): DATABASE_URL, PGHOST, PGPORT,
PGUSER, PGDATABASE and REDIS_URL. PostgreSQL's client programs (psql, pg_dump, …) of the server's own
version are put on PATH.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agents.errors import ServiceError
from agents.recipe import Services

INSIDE_SERVICES = "/services"
POSTGRES_ROOT = Path("/usr/lib/postgresql")
REDIS_SERVER = Path("/usr/bin/redis-server")
REDIS_CLI = Path("/usr/bin/redis-cli")
POSTGRES_PORT = 5432
REDIS_PORT = 6379
DATABASE = "app"
USER = "sandbox"  # the sandbox's user (bwrap.py's passwd): trust authentication, and the database's owner
SERVED_DATA = ".services"  # a live preview's services data, in the folder of the app's own data
START_SECONDS = 30  # how long a server has to answer after it started (initdb not counted)
NO_SERVICES = Services()

# What to install when a server is missing, in words for the admin.
INSTALL = {
    "postgresql": ("PostgreSQL", "apt-get install postgresql"),
    "redis": ("Redis", "apt-get install redis-server"),
}

# Run by /bin/sh inside the sandbox as `sh -c LAUNCHER sandbox-services DIR PGBIN REDIS START -- ARGV...`:
# DIR is the data folder, PGBIN PostgreSQL's bin folder (empty: no PostgreSQL), REDIS "1" or empty,
# START the seconds a server has to answer. Servers never hold fd 9 (the lock) nor the command's output.
LAUNCHER = r"""
set -u
dir=$1 pg=$2 redis=$3 wait_for=$4
shift 5
note() { printf '[sandbox: %s]\n' "$*"; }
log_end() { tail -n 5 "$1" 2>/dev/null | tr '\n' ' '; }
ticks=$((wait_for * 20))
answers() {  # name, pid, log, test...: wait until test succeeds, or say why not and exit
    name=$1 pid=$2 log=$3; shift 3; n=0
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            note "$name did not start: it exited. Its log ends: $(log_end "$log")"; exit 125
        fi
        n=$((n + 1))
        if [ "$n" -ge "$ticks" ]; then
            note "$name did not start: it did not answer within $wait_for s. Its log ends: $(log_end "$log")"
            exit 125
        fi
        sleep 0.05
    done
}
# A build's folder exists already (bound at /services); a live preview's lives in its own data, made
# here on its first start because it sits on a disk image only the sandbox mounts.
if ! mkdir -p -m 0700 "$dir" 2>/dev/null; then note "the services' data folder $dir could not be made"; exit 125; fi
exec 9>"$dir/.lock"
flock 9
pgpid= redispid=
stop() {
    [ -n "$pgpid" ] && kill -INT "$pgpid" 2>/dev/null && wait "$pgpid" 2>/dev/null
    [ -n "$redispid" ] && kill -TERM "$redispid" 2>/dev/null && wait "$redispid" 2>/dev/null
    return 0
}
trap 'stop; exit 143' TERM INT
if [ -n "$pg" ]; then
    data=$dir/postgresql log=$dir/postgresql.log
    if [ ! -e "$dir/postgresql.ready" ]; then
        rm -rf "$data"
        if ! "$pg/initdb" -D "$data" -A trust -U sandbox -E UTF8 --locale=C.UTF-8 --no-sync >"$log" 2>&1; then
            note "PostgreSQL did not start: initdb failed. Its log ends: $(log_end "$log")"; exit 125
        fi
        fresh=1
    else
        fresh=
    fi
    # Left by a server killed with an earlier command; the lock proves it gone. The socket's lock file names
    # a pid of that command's pid namespace, which another process of this one may have by now.
    rm -f "$data/postmaster.pid" "$data/.s.PGSQL.5432" "$data/.s.PGSQL.5432.lock"
    # The write-ahead log kept small: a live preview's data disk is small (serve.py's data_bytes), and by
    # default the log may grow to 1 GB before a checkpoint.
    "$pg/postgres" -D "$data" -c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories="$data" \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB \
        -c max_connections=50 -c logging_collector=off -c min_wal_size=32MB -c max_wal_size=64MB \
        </dev/null >>"$log" 2>&1 9>&- &
    pgpid=$!
    answers PostgreSQL "$pgpid" "$log" "$pg/pg_isready" -q -h 127.0.0.1 -p 5432
    if [ -n "$fresh" ]; then
        if ! "$pg/createdb" -h 127.0.0.1 -p 5432 -U sandbox app >>"$log" 2>&1; then
            note "PostgreSQL did not start: the app database could not be made. Its log ends: $(log_end "$log")"
            stop; exit 125
        fi
        : >"$dir/postgresql.ready"
    fi
fi
if [ -n "$redis" ]; then
    log=$dir/redis.log
    mkdir -p "$dir/redis"
    redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --dir "$dir/redis" \
        --logfile "$log" --daemonize no </dev/null >/dev/null 2>&1 9>&- &
    redispid=$!
    answers Redis "$redispid" "$log" sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi
"$@" 9>&-
code=$?
stop
exit $code
"""


@dataclass(frozen=True)
class Servers:
    """Where the servers a recipe needs are installed on this machine (under /usr, which the sandbox sees)."""

    postgres_bin: Path | None = None  # PostgreSQL's bin folder, e.g. /usr/lib/postgresql/15/bin
    redis: bool = False


def postgres_bin() -> Path | None:
    """The bin folder of the newest PostgreSQL server installed from Debian's packages, if any."""
    found = [p.parent for p in POSTGRES_ROOT.glob("*/bin/postgres") if p.parent.parent.name.isdigit()]
    found = [p for p in found if (p / "initdb").exists() and (p / "pg_isready").exists()]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


def find_servers(services: Services) -> Servers:
    """The servers for `services`. Raises ServiceError("service_missing") naming each one this machine
    lacks and the package that brings it: the build stops before any command runs."""
    missing = []
    pg_bin = postgres_bin() if services.postgresql else None
    if services.postgresql and pg_bin is None:
        missing.append("postgresql")
    if services.redis and not (REDIS_SERVER.exists() and REDIS_CLI.exists()):
        missing.append("redis")
    if missing:
        raise ServiceError("service_missing", "; ".join(missing_message(name) for name in missing))
    return Servers(postgres_bin=pg_bin, redis=services.redis)


def missing_message(name: str) -> str:
    label, install = INSTALL[name]
    return f"this recipe needs {label}, which is not installed on the workers: {install}"


def environment(servers: Servers) -> dict[str, str]:
    """The services' addresses, as the command sees them."""
    env = {}
    if servers.postgres_bin:
        env |= {
            "DATABASE_URL": f"postgresql://{USER}@127.0.0.1:{POSTGRES_PORT}/{DATABASE}",
            "PGHOST": "127.0.0.1", "PGPORT": str(POSTGRES_PORT), "PGUSER": USER, "PGDATABASE": DATABASE,
        }  # fmt: skip
    if servers.redis:
        env["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
    return env


def path_entries(servers: Servers) -> tuple[str, ...]:
    """Folders to add to PATH: PostgreSQL's client programs of the server's version (Debian's /usr/bin/psql
    is a wrapper that looks for clusters in /etc, which the sandbox does not show)."""
    return (str(servers.postgres_bin),) if servers.postgres_bin else ()


def wrap(servers: Servers, argv: list[str], data_dir: str) -> list[str]:
    """`argv` run by the launcher, with the servers started beside it on the data in `data_dir` (a path
    as the command sees it)."""
    if not (servers.postgres_bin or servers.redis):
        return argv
    return [
        "/bin/sh", "-c", LAUNCHER, "sandbox-services", data_dir, str(servers.postgres_bin or ""),
        "1" if servers.redis else "", str(START_SECONDS), "--", *argv,
    ]  # fmt: skip


def prepare_data(folder: Path, owner: tuple[int, int] | None) -> Path:
    """The build's data folder, made on first use for the sandbox's user (PostgreSQL insists its data
    belongs to the user it runs as, mode 0700)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    if owner:
        os.chown(folder, *owner, follow_symlinks=False)
    folder.chmod(0o700)
    return folder
