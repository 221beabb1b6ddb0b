"""Build runners: recipe steps that must run on another machine (macOS with Xcode for iOS, a device lab, a
company CI machine). Protocol and setup: docs/runners.md.

Two halves, both plain Python (no Django):

- the engine's half: `route_steps` wraps a build's sandbox so that the recipe's steps with `runs_on`
  (its [build] and [test] commands, whether the agent's `verify` or the engine runs them) become a
  `RemoteJob` handed to a `RunnerQueue` the caller passes in (the store's is prototypes/runners.py). The
  job carries the workspace as a binary patch against the target's base commit, never the repository.
  Files the step produces (the recipe's artifact) come back into the workspace, so packaging reads them
  as if the step had run here.
- the runner's half: `python -m agents runner --store URL --labels macos,xcode` (token in RUNNER_TOKEN or
  --token) polls the store, claims jobs whose labels it has, keeps its own mirror of each repository,
  applies the job's patch to a fresh copy of the base commit, runs the command in its own sandbox,
  sends log lines back, uploads the files asked for and reports the result, sending heartbeats all the
  while so that the store can give the job to another runner when this one disappears.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import quote

from agents import workspace as git
from agents.errors import BuildError, ServiceError
from agents.recipe import Recipe
from agents.sandbox import CommandResult, SandboxError, load_backend

MAX_PATCH_BYTES = 64 * 1024**2  # a prototype's change is code, not build output
MAX_COLLECT_FILES = 2000
MAX_COLLECT_BYTES = 512 * 1024**2  # as packaging.MAX_BYTES: the largest artifact the store takes
LOG_TAIL_CHARS = 3000  # of a step's output, sent to the build's log as it ends


# --- the engine's half ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteJob:
    """One step for a runner with all of `labels`: run `command` in the repository at `base_commit` with
    `patch` applied, and send back the files at `collect` (paths in the repository, files or folders)."""

    step: str  # "build" or "test"
    command: str
    labels: tuple[str, ...]
    repo_url: str
    base_commit: str
    patch: str  # `git diff --binary` of the workspace against base_commit
    collect: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoteOutcome:
    """What the step did on the runner: as a CommandResult, plus the collected files (path → content)."""

    exit_code: int
    output: str
    duration: float
    killed_reason: str | None = None
    runner: str = ""
    files: Mapping[str, bytes] = field(default_factory=dict)


class RunnerQueue(Protocol):
    """Where the engine sends steps for runners. `run` waits for the result at most `timeout` seconds (the
    build's deadline), polling `cancel()`; it returns a killed_reason "timeout" or "cancelled" outcome
    then. It raises ServiceError "runner_unavailable" when no runner took the job in time, and
    "runner_lost" when runners disappeared in the middle of it more often than the queue retries."""

    def run(self, job: RemoteJob, *, timeout: float, cancel: Callable[[], bool]) -> RemoteOutcome: ...


def remote_steps(recipe: Recipe) -> dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The recipe's steps that run on a runner: command → (step name, labels, paths to bring back). The
    build step brings back the artifact; test reports are read from the output (docs/runners.md)."""
    routes = {}
    for name, step in (("build", recipe.build), ("test", recipe.test)):
        if step is not None and step.runs_on:
            collect = (recipe.artifact.path,) if name == "build" else ()
            routes[step.command] = (name, step.runs_on, collect)
    return routes


def route_steps(sandbox, recipe: Recipe, queue: RunnerQueue | None, *, workspace: git.Workspace, repo_url: str,
                base_commit: str, emit: Callable[[str, dict], None]):  # fmt: skip
    """`sandbox` itself when no step of the recipe has `runs_on`, else a RoutedSandbox. Raises
    ServiceError "runner_unavailable" when the recipe needs runners and this store has none configured."""
    routes = remote_steps(recipe)
    if not routes:
        return sandbox
    if queue is None:
        labels = sorted({label for _, wanted, _ in routes.values() for label in wanted})
        raise ServiceError("runner_unavailable", f"the recipe runs steps on runners labelled {', '.join(labels)}, "
                           "and this build was started without a runner queue")  # fmt: skip
    return RoutedSandbox(sandbox, routes, queue, workspace=workspace, repo_url=repo_url, base_commit=base_commit,
                         emit=emit)  # fmt: skip


class RoutedSandbox:
    """A build's sandbox whose `run` sends the recipe's `runs_on` steps to a runner and runs everything else
    in the local sandbox. Same interface and results as a sandbox backend (agents/sandbox/base.py): the
    verify step cannot tell the difference, except that the output is the runner's."""

    def __init__(self, local, routes, queue: RunnerQueue, *, workspace: git.Workspace, repo_url: str,
                 base_commit: str, emit: Callable[[str, dict], None]):  # fmt: skip
        self.local = local
        self.routes = routes
        self.queue = queue
        self.tree = workspace.tree
        self.ws = workspace
        self.repo_url = repo_url
        self.base_commit = base_commit
        self.emit = emit

    def __getattr__(self, name):
        # Everything but `run` (the workspace, limits, services) is the local sandbox's.
        return getattr(self.local, name)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str = "/workspace",
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        network: bool = False,
        cancel: Callable[[], bool] | None = None,
    ) -> CommandResult:
        argv = list(argv)
        route = None
        # Only the recipe's own step, as verify runs it: a variation (another folder, extra variables,
        # network) is another command and runs here.
        if len(argv) == 3 and argv[:2] == ["bash", "-c"] and cwd == "/workspace" and not env and not network:
            route = self.routes.get(argv[2])
        if route is None:
            return self.local.run(argv, cwd=cwd, timeout=timeout, env=env, network=network, cancel=cancel)
        step, labels, collect = route
        job = RemoteJob(step=step, command=argv[2], labels=labels, repo_url=self.repo_url,
                        base_commit=self.base_commit, patch=self._patch(), collect=collect)  # fmt: skip
        self.emit("log", {"text": f"Sending the {step} step to a runner labelled {', '.join(labels)}: {argv[2]}"})
        outcome = self.queue.run(job, timeout=timeout, cancel=cancel or (lambda: False))
        for path, content in outcome.files.items():
            place_file(self.tree, path, content)
        if outcome.runner:
            self.emit("log", {"text": f"Runner {outcome.runner} ran the {step} step: exit code {outcome.exit_code}"
                              + (f", {outcome.killed_reason}" if outcome.killed_reason else "") + "."})  # fmt: skip
        return CommandResult(outcome.exit_code, outcome.output, False, outcome.duration, outcome.killed_reason)

    def _patch(self) -> str:
        target = self.ws.root / "runner.patch"
        self.ws.patch(self.base_commit, target)
        try:
            if target.stat().st_size > MAX_PATCH_BYTES:
                raise ServiceError("sandbox_unavailable", f"the change is larger than {MAX_PATCH_BYTES // 2**20} MiB "
                                   "and cannot be sent to a runner")  # fmt: skip
            return target.read_bytes().decode("utf-8", errors="surrogateescape")
        finally:
            target.unlink(missing_ok=True)


def checked_path(relative: str) -> PurePosixPath:
    """A path inside a repository, or ValueError: never absolute, never through '..'."""
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts or "\0" in relative or path.parts[:1] == (".git",):
        raise ValueError(f"{relative!r} is not a path inside the repository")
    return path


def place_file(tree: Path, relative: str, content: bytes) -> None:
    """Write a file a runner produced into the workspace at `relative`. The workspace was written by
    untrusted commands and the host writes as a more privileged user: folders are opened one by one
    without following links (a link planted at `dist` cannot send the file elsewhere), and the file
    itself replaces whatever was at its name."""
    parts = checked_path(relative).parts
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        try:
            os.unlink(parts[-1], dir_fd=fd)
        except FileNotFoundError:
            pass
        out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        with os.fdopen(out, "wb") as handle:
            handle.write(content)
    finally:
        os.close(fd)


# --- the runner's half ---------------------------------------------------------------------------------


class RunnerRefused(Exception):
    """The store refused the runner's token (401) or its labels (403); the message says why."""


class JobGone(Exception):
    """The job is no longer this runner's (re-queued after a missed heartbeat, cancelled or ended)."""


class StoreUnreachable(Exception):
    """The store did not answer (network, a restart, a 5xx): worth trying again later."""


class StoreClient:
    """The runner's one boundary with the store: HTTP with the runner's token, nothing else. Python's own
    urllib, so that a runner machine needs Python, git and this folder only."""

    def __init__(self, store: str, token: str, *, timeout: float = 60):
        self.base = store.rstrip("/") + "/api/runner/"
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, *, json_body=None, content: bytes | None = None):
        """(status, parsed JSON or None)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        data = content
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif content is not None:
            headers["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            detail = _detail(exc.read())
            if exc.code in (401, 403):
                raise RunnerRefused(detail) from None
            if exc.code in (404, 409):
                raise JobGone(detail) from None
            raise StoreUnreachable(f"{exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise StoreUnreachable(str(exc)) from None

    def register(self, labels: Sequence[str], name: str) -> dict:
        return self._call("POST", "register", json_body={"labels": list(labels), "name": name})[1]

    def claim(self, labels: Sequence[str]) -> dict | None:
        status, job = self._call("POST", "claim", json_body={"labels": list(labels)})
        return None if status == 204 else job

    def heartbeat(self, job_id: int) -> dict:
        return self._call("POST", f"jobs/{job_id}/heartbeat")[1]

    def log(self, job_id: int, lines: Sequence[str]) -> None:
        self._call("POST", f"jobs/{job_id}/events", json_body={"events": [{"kind": "log", "text": t} for t in lines]})

    def upload(self, job_id: int, path: str, content: bytes) -> None:
        self._call("PUT", f"jobs/{job_id}/files/{quote(path)}", content=content)

    def finish(self, job_id: int, result: dict) -> None:
        self._call("POST", f"jobs/{job_id}/finish", json_body=result)


def _detail(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("detail", raw[:500].decode(errors="replace")))
    except (ValueError, AttributeError):
        return raw[:500].decode(errors="replace")


class Heartbeat:
    """Tells the store every `every` seconds that the runner still works on the job, from a thread of its
    own (the command may run for an hour). `stopped` is set when the store says the job was cancelled or
    is no longer ours: the command is then killed."""

    def __init__(self, client: StoreClient, job_id: int, every: float):
        self.client, self.job_id, self.every = client, job_id, every
        self.done = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        while not self.done.wait(self.every):
            try:
                if self.client.heartbeat(self.job_id).get("cancel"):
                    self.stopped.set()
            except (JobGone, RunnerRefused):
                self.stopped.set()
            except StoreUnreachable:
                pass  # the store is briefly unreachable: the next beat may get through before the lease ends


def mirror_for(work_root: Path, repo_url: str) -> Path:
    return work_root / "mirrors" / f"{hashlib.sha256(repo_url.encode()).hexdigest()[:16]}.git"


def check_out(job: dict, work_root: Path, folder: Path) -> Path:
    """A fresh tree of the job's base commit from this runner's own mirror, with the job's patch applied."""
    mirror = mirror_for(work_root, job["repo_url"])
    git.sync_mirror(job["repo_url"], mirror)
    commit = git.resolve(mirror, job["base_commit"])
    tree = folder / "tree"
    tree.mkdir(parents=True)
    archive = folder / "base.tar"
    with open(archive, "wb") as out:
        git.git("archive", "--format=tar", commit, git_dir=mirror, stdout=out)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")  # refuses absolute paths, '..' and links out of the tree
    archive.unlink()
    if job["patch"]:
        patch = folder / "change.patch"
        patch.write_bytes(job["patch"].encode("utf-8", errors="surrogateescape"))
        # The tree is no repository: git apply works as a patch program there. The ceiling keeps it from
        # finding a repository in a folder above; git apply itself refuses paths outside the tree and
        # paths through links.
        env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(folder)}
        applied = subprocess.run(["git", *git.SAFE_CONFIG, "apply", "--binary", "--whitespace=nowarn", str(patch)],
                                 cwd=tree, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        if applied.returncode != 0:
            raise ServiceError("workspace_failed", f"the change does not apply to {commit[:12]}: "
                               f"{applied.stderr.strip()[-1500:]}")  # fmt: skip
        patch.unlink()
    return tree


def collect_files(tree: Path, paths: Sequence[str]) -> dict[str, bytes]:
    """The files at `paths` (a file, or every regular file under a folder) in the tree the command wrote,
    refusing links and special files. Missing paths are left out: the store's packaging names them."""
    found: dict[str, bytes] = {}
    total = 0
    for relative in paths:
        path = tree
        for part in checked_path(relative).parts:
            path = path / part
            if path.is_symlink():
                raise ServiceError("packaging_failed", f"'{relative}' goes through a link; links are not sent back")
        if not path.exists():
            continue
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if not p.is_dir())
        for file in files:
            info = os.lstat(file)
            if not stat.S_ISREG(info.st_mode):
                raise ServiceError("packaging_failed", f"'{file.relative_to(tree)}' is not a regular file")
            total += info.st_size
            if len(found) >= MAX_COLLECT_FILES or total > MAX_COLLECT_BYTES:
                raise ServiceError("packaging_failed", f"'{relative}' is larger than a runner sends back")
            fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as handle:
                found[file.relative_to(tree).as_posix()] = handle.read()
    return found


def execute(job: dict, *, work_root: Path, folder: Path, sandbox: str, cancel: Callable[[], bool]):
    """Run one job in `folder` on this machine: its tree checked out and patched, its command in the sandbox,
    and the files it asked for read back. Returns (CommandResult, {path: content})."""
    tree = check_out(job, work_root, folder)
    result = load_backend(sandbox)(tree).run(["bash", "-c", job["command"]], timeout=float(job["timeout"]),
                                             cancel=cancel)  # fmt: skip
    return result, collect_files(tree, job.get("collect", ()))


def run_job(client: StoreClient, job: dict, *, work_root: Path, sandbox: str, name: str, out=sys.stdout) -> None:
    """Take one claimed job to its end on this machine. The result reaches the store in any case: a
    command that failed is a result (its exit code), a runner that could not do the job says why."""
    job_id = job["id"]
    folder = Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=work_root / "jobs"))
    folder.chmod(0o711)  # the sandbox's user must reach the tree inside
    print(f"job {job_id}: {job['step']} step: {job['command']}", file=out, flush=True)
    try:
        with Heartbeat(client, job_id, float(job.get("heartbeat_seconds", 10))) as beat:
            client.log(job_id, [f"Runner {name} is running the {job['step']} step."])
            try:
                result, files = execute(job, work_root=work_root, folder=folder, sandbox=sandbox,
                                        cancel=beat.stopped.is_set)  # fmt: skip
                if result.output.strip():
                    client.log(job_id, [result.output[-LOG_TAIL_CHARS:]])
                for path, content in files.items():
                    client.upload(job_id, path, content)
                outcome = {"exit_code": result.exit_code, "output": result.output, "duration": result.duration,
                           "killed_reason": result.killed_reason}  # fmt: skip
            except (BuildError, SandboxError, OSError, ValueError) as exc:
                reason = exc.detail if isinstance(exc, BuildError) else str(exc)
                outcome = {"error": f"runner {name}: {reason}"[:4000]}
            client.finish(job_id, outcome)
        said = outcome.get("error") or f"exit code {outcome['exit_code']}"
        print(f"job {job_id}: {said}", file=out, flush=True)
    except JobGone as exc:
        print(f"job {job_id}: no longer ours ({exc})", file=out, flush=True)
    finally:
        git.remove_tree(folder)


def serve(client: StoreClient, *, labels: Sequence[str], name: str, work_root: Path, sandbox: str = "bwrap",
          poll: float = 2.0, once: bool = False, out=sys.stdout) -> int:  # fmt: skip
    """Register, then take jobs until stopped (or after one job with `once`). Returns the exit status."""
    work_root.mkdir(parents=True, exist_ok=True)
    work_root.chmod(0o711)
    (work_root / "jobs").mkdir(exist_ok=True)
    (work_root / "jobs").chmod(0o711)
    while True:  # a runner started before the store (a machine booting) waits for it
        try:
            info = client.register(labels, name)
            break
        except StoreUnreachable as exc:
            print(f"the store did not answer ({exc}); trying again in {poll:.0f} s", file=out, flush=True)
            time.sleep(poll)
    print(f"runner {info['name']}: taking jobs labelled {', '.join(info['labels'])} from the store", file=out,
          flush=True)  # fmt: skip
    while True:
        try:
            job = client.claim(labels)
        except StoreUnreachable as exc:
            print(f"the store did not answer ({exc}); trying again in {poll:.0f} s", file=out, flush=True)
            job = None
        if job is not None:
            try:
                run_job(client, job, work_root=work_root, sandbox=sandbox, name=info["name"], out=out)
            except StoreUnreachable as exc:
                # The result could not be delivered: the store gives the job to a runner again once this
                # one's heartbeats have stopped.
                print(f"job {job['id']}: the store did not answer ({exc}); the job goes back to its queue",
                      file=out, flush=True)  # fmt: skip
            if once:
                return 0
            continue
        time.sleep(poll)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents runner", description="Take build steps from a "
                                     "Prototype Store and run them on this machine (docs/runners.md).")  # fmt: skip
    parser.add_argument("--store", required=True, help="the store's address, like https://store.example.com")
    parser.add_argument("--token", default=os.environ.get("RUNNER_TOKEN", ""),
                        help="the runner's token, shown once when an admin registered it (default: $RUNNER_TOKEN, "
                        "which keeps it out of the process list)")  # fmt: skip
    parser.add_argument("--labels", required=True, help="what this machine offers, like macos,xcode: jobs whose "
                        "labels are all among these (and within the token's) come here")  # fmt: skip
    parser.add_argument("--name", default=socket.gethostname(), help="shown in the build log (default: host name)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prototype-runner",
        help="mirrors and job folders (default: ~/.cache/prototype-runner)",
    )
    parser.add_argument("--sandbox", default="bwrap", help="the sandbox backend commands run in (default: bwrap)")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between asks when there is no job")
    parser.add_argument("--once", action="store_true", help="take one job, then exit (a fresh CI machine per job)")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("no token: pass --token or set RUNNER_TOKEN (an admin registers the runner in the store)")
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    client = StoreClient(args.store, args.token)
    try:
        return serve(client, labels=labels, name=args.name, work_root=args.work.resolve(), sandbox=args.sandbox,
                     poll=args.poll, once=args.once)  # fmt: skip
    except RunnerRefused as exc:
        print(f"the store refused this runner: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


__all__ = ["RemoteJob", "RemoteOutcome", "RoutedSandbox", "RunnerQueue", "main", "route_steps", "serve"]
