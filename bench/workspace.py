"""How long a build waits for its workspace, against `git clone --local`, at 1k, 10k and 100k files.

    .venv/bin/python bench/workspace.py [--sizes 1000,10000,100000] [--runs 5]

Synthetic repositories (small files, a realistic tree depth) are made once with `git fast-import` and
kept under /tmp/prototype-store-bench between runs, with the last run's shared checkouts (about
0.5 GB, replaced by the next run; delete the folder to reclaim it). For each size it prints, measured in this run:

- the one-time shared checkout (what the first build of a commit pays, once per machine),
- preparing a workspace (an overlay over that checkout: what every later build pays), median of runs,
- `git clone --local` of the same mirror, and the ratio between the two,
- for context: the full checkout fallback, `git add --all` on the untouched workspace (it must not
  re-hash the files), the index copied per build, and the sandbox's ownership walk over the tree.

Overlay workspaces need root (or a worker started inside `unshare -rm`); otherwise only the fallback
is measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import workspace as ws  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "prototype-store-bench"
FILES_PER_DIR = 12
FANOUT = 8


def file_paths(count: int) -> list[str]:
    """`count` paths in a tree shaped like an app: FANOUT subfolders per folder, a dozen files each,
    so 100k files sit four to six levels deep."""
    paths: list[str] = []
    folders = ["src"]
    while len(paths) < count:
        next_folders = []
        for folder in folders:
            for n in range(FILES_PER_DIR):
                if len(paths) == count:
                    break
                paths.append(f"{folder}/file_{n:02d}.{('py', 'ts', 'json', 'md')[n % 4]}")
            next_folders += [f"{folder}/pkg{k}" for k in range(FANOUT)]
        folders = next_folders
    return paths


def make_repo(count: int) -> Path:
    """A bare repository with one commit of `count` small files, cached between runs."""
    mirror = CACHE / f"repo-{count}.git"
    if (mirror / "refs" / "heads" / "main").exists():
        return mirror
    shutil.rmtree(mirror, ignore_errors=True)
    started = time.monotonic()
    ws.git("init", "--bare", "--quiet", "--initial-branch=main", str(mirror))
    stream = bytearray(b"commit refs/heads/main\ncommitter Bench <bench@example.invalid> 1700000000 +0000\n")
    stream += b"data 9\nsynthetic\n"
    for number, path in enumerate(file_paths(count)):
        body = f"// {path}\nexport const value{number} = {number};\n".encode() + b"x" * (number % 400) + b"\n"
        stream += f"M 100644 inline {path}\ndata {len(body)}\n".encode() + body + b"\n"
    subprocess.run(["git", f"--git-dir={mirror}", "fast-import", "--quiet"], input=bytes(stream), check=True)
    print(f"  (made the {count:,}-file repository in {time.monotonic() - started:.1f} s, cached in {CACHE})")
    return mirror


def timed(function):
    """(seconds, result) of calling function. Dirty pages are written out first, so that a measurement
    does not pay for the disk writes of the one before."""
    os.sync()
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def give_tree_time(tree: Path) -> float | None:
    """The sandbox's ownership walk (agents.sandbox.bwrap.give_tree) over a prepared tree."""
    try:
        from agents.sandbox.bwrap import give_tree
    except ImportError:
        return None
    return timed(lambda: give_tree(tree, *ws.SANDBOX_OWNER))[0] if os.geteuid() == 0 else None


def bench(count: int, runs: int, scratch: Path) -> dict:
    mirror = make_repo(count)
    commit = ws.resolve(mirror, "main")
    shutil.rmtree(ws.checkouts_dir(mirror), ignore_errors=True)
    row: dict = {"files": count}

    def fresh(name: str) -> Path:
        path = scratch / f"{count}-{name}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    # The first build of a commit makes the shared checkout (and mounts the first overlay).
    row["shared"], first = timed(lambda: ws.prepare_workspace(mirror, commit, fresh("first")))
    first.close()
    if first.overlay:
        prepares = []
        for n in range(runs):
            seconds, workspace = timed(lambda n=n: ws.prepare_workspace(mirror, commit, fresh(f"build{n}")))
            prepares.append(seconds)
            if n == 0:
                row["upper_entries"] = sum(len(d) + len(f) for _, d, f in os.walk(workspace.root / "upper"))
                row["give_tree"] = give_tree_time(workspace.tree)
                row["upper_after_walk"] = sum(len(d) + len(f) for _, d, f in os.walk(workspace.root / "upper"))
                row["add"] = timed(workspace._add)[0]
                row["index_bytes"] = (workspace.root / "index").stat().st_size
            workspace.close()
        row["prepare"] = statistics.median(prepares)

    row["full"], full = timed(lambda: ws.prepare_workspace(mirror, commit, fresh("full"), overlay=False))
    full.close()
    clones = []
    for n in range(3 if count < 100_000 else 1):
        target = fresh(f"clone{n}")
        clones.append(timed(lambda t=target: ws.git("clone", "--local", "--quiet", str(mirror), str(t)))[0])
        shutil.rmtree(target, ignore_errors=True)
    row["clone"] = statistics.median(clones)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="work-", dir=CACHE))
    scratch.chmod(0o711)
    started = time.monotonic()
    rows = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"{size:,} files …", flush=True)
            rows.append(bench(size, args.runs, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nWorkspace preparation, {date.today()}, git {ws.git('--version').split()[-1]}, "
          f"{os.cpu_count()} CPUs, kernel {os.uname().release}")  # fmt: skip
    overlay = all("prepare" in row for row in rows)
    columns = ("shared checkout (once)", "prepare (overlay)", "git clone --local", "clone / prepare")
    header = f"{'files':>8} | " + " | ".join(columns)
    print(header)
    print("-" * len(header))
    for row in rows:
        if overlay:
            ratio = row["clone"] / row["prepare"]
            print(f"{row['files']:>8,} | {row['shared']:>20.2f} s | {row['prepare'] * 1000:>14.1f} ms | "
                  f"{row['clone']:>15.2f} s | {ratio:>14.0f}×")  # fmt: skip
        else:
            print(f"{row['files']:>8,} | {'—':>22} | {'(no overlay)':>17} | {row['clone']:>15.2f} s | {'—':>15}")
    print("\nFor context:")
    for row in rows:
        parts = [f"full checkout (fallback) {row['full']:.2f} s"]
        if overlay:
            parts += [
                f"git add --all on the untouched tree {row['add']:.2f} s",
                f"index {row['index_bytes'] / 2**20:.1f} MiB",
                f"entries in the upper layer after the sandbox's ownership walk: {row['upper_after_walk']}",
            ]
            if row.get("give_tree") is not None:
                parts.append(f"sandbox ownership walk {row['give_tree']:.2f} s")
        print(f"{row['files']:>8,}: " + "; ".join(parts))
    if overlay:
        big = rows[-1]
        ok = big["prepare"] < 1 and big["clone"] / big["prepare"] >= 20
        print(f"\nGoal at {big['files']:,} files (under 1 s and at least 20× faster than a clone): "
              f"{'met' if ok else 'NOT met'}")  # fmt: skip
    else:
        print("\nOverlay workspaces were not available (run as root), so only the fallback was measured.")
    print(f"Total {time.monotonic() - started:.0f} s.")


if __name__ == "__main__":
    main()
