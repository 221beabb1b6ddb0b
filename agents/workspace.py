"""Git on the host: a bare mirror per target and a workspace per build.

The workspace is a plain directory with no `.git` inside: host-side git always names the mirror with
`--git-dir` and keeps this build's index outside the tree. Nothing the sandbox writes can therefore
change git's configuration or plant hooks that run on the host, and host git runs with hooks,
fsmonitor and user/system configuration disabled as a second line of defence.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agents.errors import ServiceError

SAFE_CONFIG = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.sshCommand=ssh",
    "-c", "safe.directory=*",
    "-c", "protocol.ext.allow=never",
    "-c", "core.symlinks=true",
    "-c", "gc.auto=0",
)  # fmt: skip
AUTHOR = ("Prototype Store", "store@prototype.invalid")
HEADS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": AUTHOR[0],
        "GIT_AUTHOR_EMAIL": AUTHOR[1],
        "GIT_COMMITTER_NAME": AUTHOR[0],
        "GIT_COMMITTER_EMAIL": AUTHOR[1],
    }
    env.update(extra or {})
    return env


def git(
    *args: str,
    git_dir: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 600,
) -> str:
    """Run host-side git safely and return its stdout. Raises ServiceError(workspace_failed)."""
    argv = ["git", *SAFE_CONFIG]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    argv.extend(args)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=_env(env), input=input, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError("workspace_failed", f"git {args[0]}: {exc}") from exc
    if check and proc.returncode != 0:
        raise ServiceError("workspace_failed", f"git {' '.join(args[:2])} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sync_mirror(url: str, mirror: Path) -> None:
    """Create or refresh the bare mirror of a target repository, under a lock so that builds of one
    target on one machine never fetch at the same time. Only branches and tags are fetched: the
    mirror's own refs/prototypes/* are never pruned."""
    with _locked(mirror.with_name(mirror.name + ".lock")):
        created = not (mirror / "HEAD").exists()
        if created:
            mirror.parent.mkdir(parents=True, exist_ok=True)
            git("init", "--bare", "--quiet", str(mirror))
        git("fetch", "--quiet", "--prune", "--no-tags", url, *HEADS, git_dir=mirror)
        if created:
            # Point the mirror's HEAD at the repository's default branch, so "HEAD" means what it means there.
            for line in git("ls-remote", "--symref", url, "HEAD", git_dir=mirror).splitlines():
                if line.startswith("ref: ") and line.endswith("\tHEAD"):
                    git("symbolic-ref", "HEAD", line[5:].split("\t")[0], git_dir=mirror)


def resolve(mirror: Path, ref: str) -> str:
    """The commit a branch, tag or sha names in the mirror."""
    if not _SHA.match(ref):
        for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
            out = git("rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", git_dir=mirror, check=False)
            if out.strip():
                return out.strip()
        raise ServiceError("workspace_failed", f"the branch or commit '{ref}' does not exist in the repository")
    git("cat-file", "-e", f"{ref}^{{commit}}", git_dir=mirror)
    return ref


def read_file(mirror: Path, commit: str, path: str) -> str | None:
    """The text of a file at a commit, or None when the commit has no such file."""
    proc = subprocess.run(
        ["git", *SAFE_CONFIG, f"--git-dir={mirror}", "show", f"{commit}:{path}"],
        capture_output=True, env=_env(), timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", errors="replace")


def list_files(mirror: Path, commit: str) -> list[str]:
    return git("ls-tree", "-r", "--name-only", "-z", commit, git_dir=mirror).split("\0")[:-1]


@dataclass(frozen=True)
class DiffStat:
    files: tuple[tuple[str, int, int], ...]  # (path, added, deleted); -1 for binary files

    @property
    def added(self) -> int:
        return sum(max(a, 0) for _, a, _ in self.files)

    @property
    def deleted(self) -> int:
        return sum(max(d, 0) for _, _, d in self.files)

    def as_dict(self) -> dict:
        return {
            "files": [{"path": p, "added": a, "deleted": d} for p, a, d in self.files],
            "added": self.added,
            "deleted": self.deleted,
        }


@dataclass
class Workspace:
    """One build's working tree (`tree`, bound into the sandbox) and its private index."""

    mirror: Path
    root: Path
    base: str
    exclude: tuple[str, ...] = ()  # paths never committed (the build's output)

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def _index_env(self) -> dict[str, str]:
        return {"GIT_INDEX_FILE": str(self.root / "index"), "GIT_WORK_TREE": str(self.tree)}

    def _git(self, *args: str, **kw) -> str:
        return git(*args, git_dir=self.mirror, env=self._index_env, **kw)

    def _add(self) -> None:
        # The build's output is kept out through an exclude file of this build's own (untracked files only).
        excludes = self.root / "exclude"
        excludes.write_text("".join(f"/{path.strip('/')}\n" for path in self.exclude))
        self._git("-c", f"core.excludesFile={excludes}", "add", "--all", "--", ".")

    def commit(self, message: str, ref: str) -> str:
        """Commit everything in the tree on top of `base` as `ref` in the mirror and return the commit."""
        self._add()
        tree = self._git("write-tree").strip()
        commit = self._git("commit-tree", tree, "-p", self.base, "-F", "-", input=message).strip()
        self._git("update-ref", ref, commit)
        return commit

    def changed(self) -> bool:
        self._add()
        return bool(self._git("diff", "--cached", "--name-only", self.base).strip())

    def pending_diff(self) -> str:
        """The change in the tree so far, against the base (nothing is committed)."""
        self._add()
        return self._git("diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv", self.base)

    def diff(self, commit: str) -> str:
        return git("diff", "--no-color", "--no-ext-diff", "--no-textconv", self.base, commit, git_dir=self.mirror)

    def diffstat(self, commit: str) -> DiffStat:
        out = git("diff", "--numstat", "-z", "--no-renames", self.base, commit, git_dir=self.mirror)
        files = []
        for record in out.split("\0"):
            if not record:
                continue
            added, deleted, path = record.split("\t", 2)
            files.append((path, int(added) if added != "-" else -1, int(deleted) if deleted != "-" else -1))
        return DiffStat(tuple(files))


def prepare_workspace(mirror: Path, commit: str, root: Path) -> Workspace:
    """Check `commit` out into `root/tree`, a fresh directory with no .git inside."""
    workspace = Workspace(mirror=mirror, root=root, base=commit)
    workspace.tree.mkdir(parents=True, exist_ok=False)
    workspace._git("read-tree", commit)
    workspace._git("checkout-index", "--all", "--force")
    return workspace
