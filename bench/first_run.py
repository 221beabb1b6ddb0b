"""What a new person waits for: `make run` in a fresh clone, until the store answers GET / with 200.

    .venv/bin/python bench/first_run.py [--committed | --only FILE...]   # BENCH_KEEP=1 keeps the clone

Clones this checkout into a temporary folder (with the checkout's uncommitted changes applied on top, so a
change can be measured before it is committed; --committed measures the last commit alone), so there is no
virtualenv and no var/ yet, and runs `make run` there on a free port: the Debian packages check, a fresh
virtualenv and `pip install .[test]`, migrate, seed, then the server and its workers. pip is not told to
forget what it has: it reuses its download and wheel cache (~/.cache/pip) and this machine's local wheel
folders, as it would for a person who installed anything in Python before; the bench prints whether a
cache was there. The time is from `make run` to the first 200 on /; each step's end is noted as it is seen
(the virtualenv ready, the database migrated, the seed done, the server answering), then the whole
process group is stopped.

Goal: under 3 minutes on this machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 180.0  # seconds
GIVE_UP = 900.0  # a first run this slow is reported as not met rather than waited for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clone(into: Path, *, committed: bool, only: list[str]) -> str:
    """A clone of this checkout, as a newcomer's `git clone` makes it; with the checkout's uncommitted
    changes (tracked edits and new files git does not ignore) copied on top unless `committed`, or only
    the files named in `only` (one change measured apart from the others in the same checkout)."""
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(into)], check=True)
    if only:
        for name in only:
            shutil.copy2(ROOT / name, into / name)
        return f"the last commit with this checkout's {', '.join(only)}"
    if committed:
        return "the last commit"
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=ROOT, check=True, capture_output=True).stdout
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=into, input=diff, check=True)
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split("\0")  # fmt: skip
    for name in filter(None, untracked):
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, into / name)
    return "the last commit and the checkout's uncommitted changes"


def answers(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def pip_cache() -> str:
    folder = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")
    if not folder.is_dir():
        return "pip had no cache: every package was downloaded"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return f"pip's cache at {folder} held {size / 1e6:,.0f} MB before the run (downloads and built wheels reused)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--committed", action="store_true", help="the last commit only, without uncommitted changes")
    parser.add_argument("--only", nargs="+", default=[], metavar="FILE",
                        help="the last commit with only these files taken from the checkout")  # fmt: skip
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-first-run-"))
    scratch.chmod(0o711)
    work = scratch / "prototype-store"
    port = free_port()
    cache = pip_cache()
    what = clone(work, committed=args.committed, only=args.only)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE", "VAR_DIR")}
    log = scratch / "make-run.log"
    # Each step leaves a mark on disk or in the output; the first time each is seen is when it ended.
    marks = {
        "virtualenv and pip install": lambda text: (work / ".venv" / ".installed").exists(),
        "migrate": lambda text: "target " in text or "Prototype Store:" in text,
        "seed": lambda text: "Prototype Store:" in text,
        "server answering": None,  # set below, from the HTTP check
    }
    seen: dict[str, float] = {}
    started = time.monotonic()
    with log.open("wb") as out:
        make = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=work, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    status, elapsed = None, 0.0
    try:
        while True:
            elapsed = time.monotonic() - started
            text = log.read_text(errors="replace")
            for name, check in marks.items():
                if check is not None and name not in seen and check(text):
                    seen[name] = elapsed
            if make.poll() is not None:
                print(f"make run stopped with exit code {make.returncode} after {elapsed:.0f} s:\n{text[-3000:]}")
                break
            status = answers(f"http://127.0.0.1:{port}/")
            if status == 200:
                seen["server answering"] = elapsed = time.monotonic() - started
                break
            if elapsed > GIVE_UP:
                print(f"no answer on / after {GIVE_UP:.0f} s (last status: {status})")
                break
            time.sleep(0.5)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)  # make, manage.py runstore and its web server and workers
            try:
                make.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()

    print(f"A fresh clone ({what}), `make run` on port {port} until GET / answers 200.")
    print(cache + ".\n")
    print(f"{'step':30} {'ended at':>9} {'took':>7}")
    previous = 0.0
    for name in marks:
        if name in seen:
            print(f"{name:30} {seen[name]:>8.1f}s {seen[name] - previous:>6.1f}s")
            previous = seen[name]
        else:
            print(f"{name:30} {'-':>9} {'-':>7}")
    met = status == 200 and elapsed < GOAL
    total = f"{elapsed:.0f} s" if status == 200 else "never (see above)"
    print(f"\nfirst run: ready in {total} (goal: under {GOAL:.0f} s)")
    if os.environ.get("BENCH_KEEP"):
        print(f"kept: {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)  # the virtualenv alone is 700 MB: this takes a while
    print("met" if met else "not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
