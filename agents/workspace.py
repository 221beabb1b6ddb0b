"""Git on the host: a bare mirror per target and a workspace per build.

The workspace is a plain directory with no `.git` inside: host-side git always names the mirror with
`--git-dir` and keeps this build's index outside the tree. Nothing the sandbox writes can therefore
change git's configuration or plant hooks that run on the host, and host git runs with hooks,
fsmonitor and user/system configuration disabled as a second line of defence.

Preparing a workspace does not grow with the size of the repository. Each commit that builds start
from is checked out once into a shared, read-only checkout next to the mirror
(`<mirror>.checkouts/<commit>/tree`, with a refreshed index beside it), and every build mounts an
overlay over it: the shared checkout is the lower layer, and everything the build writes goes to its
own upper layer. Overlayfs shows lower files with their own inode, owner, size and times, so a copy of
the shared index matches the merged tree and `git add --all` hashes only what the build changed.
Where overlay mounts are not possible (not root, or the mount fails) the commit is checked out in full.

The build's own layer (overlay upper and work directories) lives on a filesystem of its own, mounted
nosuid and nodev with the build's disk quota as its size: an ext4 image on a loop device (on disk), or
a tmpfs where loop devices are not available. A command that writes more fails with "no space left",
nothing it writes is ever setuid or a usable device on the host, and closing the workspace is one
unmount. Full checkouts (an unprivileged worker) have no such filesystem: their quota is checked by
measuring the tree between steps (see `Workspace.check_quota`).

Host-side git treats the tree as hostile. Before git looks at it (`_add`), one bounded walk without
recursion (`inspect_tree`) removes every `.git` entry below the top (a `.git` file saying `gitdir:
/elsewhere` would make git read another repository and record its HEAD as a submodule) and every FIFO,
socket and device (git would block reading a FIFO named `.gitignore`), refuses trees nested deeper
than MAX_DEPTH or with more than MAX_ENTRIES entries, and lists files over the commit size limit,
which are kept out of the commit. Every git call of a workspace is bounded by the build's deadline.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agents.errors import ServiceError, UserError

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
# Who runs sandboxed commands when the worker is root (BwrapSandbox.host_uid/host_gid). Shared checkouts
# belong to this user from the start, so that giving the workspace to it changes nothing in the lower
# layer (a chown through overlay would copy every file up).
SANDBOX_OWNER = (65534, 65534)
KEEP_CHECKOUTS = 4  # shared checkouts kept per mirror (least recently used are removed)
GiB = 1024**3
MiB = 1024**2
DISK_QUOTA = 4 * GiB  # what one build may write (its overlay layer's size); BuildSpec.disk_quota_bytes
MAX_COMMITTED_FILE = 50 * MiB  # larger files are left out of the result commit (the mirror is shared)
MAX_DEPTH = 200  # directories nested deeper than this are refused (git and Python walks recurse)
MAX_ENTRIES = 500_000  # files, folders and links in one tree
DIFF_KEPT = 2 * MiB  # of the diff text kept in memory (the whole diff goes to a file)

log = logging.getLogger(__name__)


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
    stdout=None,
    bounded: bool = False,
) -> str:
    """Run host-side git safely and return its stdout (or write it to the binary file `stdout`, then
    returning ""). Raises ServiceError(workspace_failed), also when git takes longer than `timeout`,
    unless `bounded` (the caller bounds git by the build's deadline and says so itself): then
    subprocess.TimeoutExpired."""
    argv = ["git", *SAFE_CONFIG]
    if git_dir is not None:
        argv.append(f"--git-dir={git_dir}")
    argv.extend(args)
    try:
        proc = subprocess.run(
            argv, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
            env=_env(env), input=input.encode() if input is not None else None, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        if bounded:
            raise
        raise ServiceError("workspace_failed", f"git {args[0]}: {exc}") from exc
    except OSError as exc:
        raise ServiceError("workspace_failed", f"git {args[0]}: {exc}") from exc
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", errors="replace").strip()[-2000:]
        raise ServiceError("workspace_failed", f"git {' '.join(args[:2])} failed: {stderr}")
    return proc.stdout.decode("utf-8", errors="surrogateescape") if stdout is None else ""


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
        # --end-of-options: a URL starting with "-" is a URL, never an option (--upload-pack=… runs a program).
        git("fetch", "--quiet", "--prune", "--no-tags", "--end-of-options", url, *HEADS, git_dir=mirror)
        if created:
            # Point the mirror's HEAD at the repository's default branch, so "HEAD" means what it means there.
            for line in git("ls-remote", "--symref", "--end-of-options", url, "HEAD", git_dir=mirror).splitlines():
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


def update_ref(mirror: Path, ref: str, commit: str) -> None:
    """Point `ref` at `commit` in the mirror (which must hold the commit). The ref is checked by git's own
    rules first, so a name from elsewhere can never be taken for an option or reach outside refs/.
    Raises ServiceError(workspace_failed)."""
    if not _SHA.match(commit):
        raise ServiceError("workspace_failed", f"not a commit id: {commit!r}")
    if not ref.startswith("refs/"):
        raise ServiceError("workspace_failed", f"not a ref: {ref!r}")
    git("check-ref-format", ref)
    git("cat-file", "-e", f"{commit}^{{commit}}", git_dir=mirror)
    git("update-ref", "--no-deref", ref, commit, git_dir=mirror)


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
    """One build's working tree (`tree`, bound into the sandbox) and its private index.

    `lower` is the shared checkout when the tree is an overlay over it (None for a full checkout), and
    `layer` the mount point of the filesystem holding this build's upper layer (None without one).
    `deps` is the read-only dependency layer (agents/deplayer.py) the tree shows on top of the checkout:
    an extra lower layer of the overlay, or copied into a full checkout.
    `deadline` (time.monotonic()) bounds every git call on the tree: past it they raise
    UserError("timed_out"). Call `close()` when the build is over: it unmounts the overlay and the
    layer and removes this build's files.
    """

    mirror: Path
    root: Path
    base: str
    exclude: tuple[str, ...] = ()  # paths never committed (the build's output)
    lower: Path | None = None
    layer: Path | None = None
    deps: Path | None = None
    quota: int = DISK_QUOTA
    max_file_bytes: int = MAX_COMMITTED_FILE
    deadline: float | None = None
    left_out: tuple[str, ...] = ()  # files the last `_add` kept out of the index (over max_file_bytes)
    _next_measure: float = field(default=0.0, repr=False, compare=False)
    _lease: int | None = field(default=None, repr=False, compare=False)
    _deps_lease: int | None = field(default=None, repr=False, compare=False)

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def overlay(self) -> bool:
        return self.lower is not None

    @property
    def upper(self) -> Path | None:
        """Where the build's own files are on the host (the overlay's upper layer), or None."""
        if not self.overlay:
            return None
        return (self.layer or self.root) / "upper"

    @property
    def _index_env(self) -> dict[str, str]:
        return {"GIT_INDEX_FILE": str(self.root / "index"), "GIT_WORK_TREE": str(self.tree)}

    def time_left(self, wanted: float = 600) -> float:
        """Seconds a host-side step on the tree may take: `wanted`, or less near the deadline."""
        if self.deadline is None:
            return wanted
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise UserError("timed_out", "the build's time ran out while its files were being saved")
        return min(wanted, left)

    def _git(self, *args: str, stdout=None, **kw) -> str:
        timeout = self.time_left(kw.pop("timeout", 600))
        try:
            return git(
                *args, git_dir=self.mirror, env=self._index_env, timeout=timeout, stdout=stdout, bounded=True, **kw
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                "timed_out", f"git {args[0]} on the prototype's files took longer than the {timeout:.0f} s left"
            ) from None

    def _add(self) -> None:
        """Stage the whole tree, after making it safe for git to read (see inspect_tree)."""
        report = inspect_tree(self.tree, deadline=self.deadline, max_file_bytes=self.max_file_bytes, skip=self.exclude)
        self.left_out = report.large
        # The build's output and files over the size limit are kept out through an exclude file of this
        # build's own (which covers untracked files) and through pathspecs (which also cover files the
        # base commit tracks: those keep their committed version).
        excludes = self.root / "exclude"
        excludes.write_text("".join(f"/{_glob_escape(path.strip('/'))}\n" for path in self.exclude))
        args = ["-c", f"core.excludesFile={excludes}", "add", "--all"]
        if report.large:
            pathspecs = self.root / "pathspecs"
            pathspecs.write_bytes(b"".join(f"{spec}\0".encode() for spec in
                                           [".", *(f":(exclude,literal){path}" for path in report.large)]))  # fmt: skip
            self._git(*args, f"--pathspec-from-file={pathspecs}", "--pathspec-file-nul")
        else:
            self._git(*args, "--", ".")

    def commit(self, message: str, ref: str) -> str:
        """Commit everything in the tree on top of `base` as `ref` in the mirror and return the commit."""
        self._add()
        tree = self._git("write-tree").strip()
        commit = self._git("commit-tree", tree, "-p", self.base, "-F", "-", input=message).strip()
        self._git("update-ref", ref, commit)
        return commit

    def written(self) -> list[str]:
        """What git sees as new, ignored or changed in the tree since the base (a folder that is new as a
        whole is one entry): the output of a setup run in a full checkout. Deleted files are not listed.
        The tree is made safe for git first (see inspect_tree)."""
        inspect_tree(self.tree, deadline=self.deadline)
        status = self._git("status", "--porcelain=v1", "-z", "--ignored", "--untracked-files=normal", "--no-renames")
        paths = []
        for record in status.split("\0"):
            code, path = record[:2], record[3:].rstrip("/")
            if path and (code in ("??", "!!") or code[1] in "MT"):
                paths.append(path)
        return paths

    def changed(self) -> bool:
        self._add()
        return bool(self._git("diff", "--cached", "--name-only", self.base).strip())

    def pending_diff(self, limit: int = DIFF_KEPT) -> str:
        """The change in the tree so far, against the base (nothing is committed), cut at `limit` bytes."""
        self._add()
        with tempfile.TemporaryFile(dir=self.root) as out:
            self._git("diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv", self.base, stdout=out)
            return _head(out, limit)

    def patch(self, against: str, to: Path) -> None:
        """The tree as it is now, as a binary patch against `against` (a commit in the mirror), written to
        `to`: how a step sent to a build runner carries the workspace (agents/runner.py)."""
        self._add()
        try:
            with open(to, "wb") as out:
                self._git("diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
                          "--no-renames", against, stdout=out)  # fmt: skip
        finally:
            # Back to the base: the tree's build output (the artifact) travels to the runner, but once in
            # the index `commit` would keep it, whatever `exclude` says.
            self._git("read-tree", self.base)

    def diff(self, commit: str, to: Path | None = None, limit: int = DIFF_KEPT) -> str:
        """The result's diff against the base. Streamed from git into `to` (whole) when given, else a
        temporary file; the text returned is at most `limit` bytes of it, so a huge diff never sits in
        the worker's memory."""
        if to is not None:
            to.parent.mkdir(parents=True, exist_ok=True)
        with open(to, "w+b") if to is not None else tempfile.TemporaryFile(dir=self.root) as out:
            args = ("diff", "--no-color", "--no-ext-diff", "--no-textconv", self.base, commit)
            timeout = self.time_left()
            try:
                git(*args, git_dir=self.mirror, timeout=timeout, stdout=out, bounded=True)
            except subprocess.TimeoutExpired:
                raise UserError("timed_out", f"the diff took longer than the {timeout:.0f} s left") from None
            return _head(out, limit)

    def diffstat(self, commit: str) -> DiffStat:
        out = git("diff", "--numstat", "-z", "--no-renames", self.base, commit, git_dir=self.mirror)
        files = []
        for record in out.split("\0"):
            if not record:
                continue
            added, deleted, path = record.split("\t", 2)
            files.append((path, int(added) if added != "-" else -1, int(deleted) if deleted != "-" else -1))
        return DiffStat(tuple(files))

    def check_quota(self) -> None:
        """Raise UserError("disk_quota") when the build has (nearly) filled its quota. With a layer
        filesystem the kernel already stopped the writes (ENOSPC) and this turns the command's "no space
        left" into the build's clear error; on a full checkout the tree is measured."""
        if self.layer is not None:
            fs = os.statvfs(self.layer)
            used, size = (fs.f_blocks - fs.f_bfree) * fs.f_frsize, fs.f_blocks * fs.f_frsize
            full = fs.f_bavail * fs.f_frsize < max(size // 100, 1 * MiB)  # what is left is noise
        else:
            used = inspect_tree(self.tree, deadline=self.deadline, remove=False).total_bytes
            full = used > self.quota
        if full:
            raise UserError("disk_quota", f"the prototype wrote more than {_size(self.quota)} (it used {_size(used)})")

    def over_quota(self) -> bool:
        """True when a full checkout (no layer filesystem) holds more than its quota: a `cancel`
        callback for the sandbox, so a command filling the disk is stopped while it runs. The tree is
        measured at most once a second, and never more than a tenth of the time (a walk of a large tree
        costs). With a layer the kernel enforces the quota and this is always False."""
        now = time.monotonic()
        if self.layer is not None or now < self._next_measure:
            return False
        try:
            used = inspect_tree(self.tree, remove=False).total_bytes
        except (OSError, UserError):
            return False  # a tree that cannot be measured is refused in words by the next step
        self._next_measure = time.monotonic() + max(1.0, 10 * (time.monotonic() - now))
        return used > self.quota

    def close(self) -> None:
        """Unmount the overlay and the layer and remove this build's files (the tree's content, the upper
        layer). Commit first: what is not committed is gone. Safe to call twice; never raises for a
        hostile tree (folders nested deeper than Python can recurse are removed without recursion)."""
        with _registry_lock:
            _open.pop(self.root.resolve(), None)
        if self.overlay:
            try:
                _unmount(self.tree)
                if self.layer is not None:
                    _unmount(self.layer)
            except OSError as exc:  # never end the build with an error of ours at the very end
                log.error("Could not unmount the workspace %s: %s", self.tree, exc)
                return  # and keep the lease: the lower layer must outlive the mount
            for name in ("upper", "work", "layer", "layer.img"):
                remove_tree(self.root / name)
        else:
            remove_tree(self.tree)
        for name in ("_lease", "_deps_lease"):
            lease = getattr(self, name)
            if lease is not None:
                os.close(lease)  # the shared checkout, the dependency layer may be pruned again
                setattr(self, name, None)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _head(handle, limit: int) -> str:
    handle.seek(0)
    data = handle.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    if len(data) > limit:
        total = handle.seek(0, os.SEEK_END)
        text += f"\n[… the diff goes on: {_size(total)} in all …]\n"
    return text


def _size(n: int) -> str:
    for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _glob_escape(path: str) -> str:
    return re.sub(r"([\\*?\[\]!#])", r"\\\1", path)


# --- the tree as git will see it ---------------------------------------------------------------------


@dataclass(frozen=True)
class TreeReport:
    entries: int
    total_bytes: int
    large: tuple[str, ...]  # regular files over max_file_bytes, relative to the tree
    removed: tuple[str, ...]  # .git entries and special files taken out of the tree


_SPECIAL = (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


def inspect_tree(
    tree: Path,
    *,
    deadline: float | None = None,
    max_file_bytes: int | None = None,
    skip: tuple[str, ...] = (),
    remove: bool = True,
    max_depth: int = MAX_DEPTH,
    max_entries: int = MAX_ENTRIES,
) -> TreeReport:
    """Walk the tree the way host git will, without recursion and without following links, holding
    one directory fd per level (so a path too long for the kernel is no problem).

    With `remove`, takes out every entry named `.git` (a file, a link or a folder: git follows a
    `gitdir:` file to another repository and records it as a submodule) or named so that git refuses
    it (see _git_refuses), and every FIFO, socket and device (git never commits them, and opening a
    FIFO blocks). Refuses (UserError "unsafe_files") trees nested deeper than `max_depth` or with more
    than `max_entries` entries, and raises UserError("timed_out") past `deadline`. `skip` lists paths
    (the build's output) not looked into. Directories are read lazily: a folder of a million files
    is refused at `max_entries` without being listed whole."""
    skipped = {PurePosixPath(p.strip("/")) for p in skip if p.strip("/")}
    large: list[str] = []
    removed: list[str] = []
    entries = total = 0
    root_fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    stack: list[tuple[int, PurePosixPath, Iterator[os.DirEntry]]] = []
    try:
        stack.append((root_fd, PurePosixPath(), os.scandir(root_fd)))
        while stack:
            fd, where, pending = stack[-1]
            entry = next(pending, None)
            if entry is None:
                stack.pop()
                pending.close()
                if fd != root_fd:
                    os.close(fd)
                continue
            entries += 1
            if entries % 1000 == 0 and deadline is not None and time.monotonic() > deadline:
                raise UserError("timed_out", "the build's time ran out while its files were being checked")
            if entries > max_entries:
                raise UserError("unsafe_files", f"the prototype has more than {max_entries:,} files and folders")
            path = where / entry.name
            if path in skipped:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = stat.S_IFMT(info.st_mode)
            if remove and (kind in _SPECIAL or _git_refuses(entry.name, link=kind == stat.S_IFLNK)):
                _remove_entry(fd, entry.name, kind == stat.S_IFDIR)
                removed.append(str(path))
                continue
            if kind == stat.S_IFREG:
                total += info.st_blocks * 512
                if max_file_bytes is not None and info.st_size > max_file_bytes:
                    large.append(str(path))
            elif kind == stat.S_IFDIR:
                if len(stack) >= max_depth:
                    raise UserError(
                        "unsafe_files",
                        f"the prototype's folders are nested more than {max_depth} deep (at {str(where)[:120]}…)",
                    )
                child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                stack.append((child, path, os.scandir(child)))
    finally:
        for fd, _, pending in stack:
            pending.close()
            if fd != root_fd:
                os.close(fd)
        os.close(root_fd)
    if removed:
        log.info("Removed %d entries git must not read from %s: %s", len(removed), tree, ", ".join(removed[:5]))
    return TreeReport(entries, total, tuple(sorted(large)), tuple(sorted(removed)))


_NTFS_SHORT = re.compile(r"^(git~1|gitmod~\d)$")


def _git_refuses(name: str, *, link: bool) -> bool:
    """Names host git must not meet: `.git` itself (a `gitdir:` file or a nested repository, which git
    would follow), and the names git refuses to commit as such, in any case and in their Windows
    spellings (`.GIT`, `.git.`, `.git::$INDEX_ALLOCATION`, `git~1`), which would otherwise fail the
    whole commit; plus `.gitmodules` as a link, which git refuses too."""
    lower = name.lower()
    trimmed = lower.rstrip(" .")
    if trimmed == ".git" or lower.startswith(".git:") or lower == "git~1":
        return True
    return link and (trimmed == ".gitmodules" or lower.startswith(".gitmodules:") or bool(_NTFS_SHORT.match(lower)))


def _remove_entry(dir_fd: int, name: str, is_dir: bool) -> None:
    if not is_dir:
        os.unlink(name, dir_fd=dir_fd)
        return
    # A folder (a nested repository's .git): moved aside into a fresh folder first, so that nothing
    # named .git is left while it is being removed, then removed without recursion.
    aside = f".git-removed-{uuid.uuid4().hex}"
    os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    _remove_at(dir_fd, aside)


def remove_tree(path: Path) -> None:
    """Remove `path` and everything under it like `shutil.rmtree(ignore_errors=True)`, but without
    recursion and never following links: a hostile tree nested 100,000 deep is removed too. Each
    folder found deeper than a few levels is moved up next to `path`'s top folder first, so at most a
    few directory fds are held at any time."""
    path = Path(path)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _remove_at(parent, path.name)
    except OSError as exc:
        log.warning("Could not remove all of %s: %s", path, exc)
    finally:
        os.close(parent)


def _remove_at(parent_fd: int, name: str) -> None:
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    top = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        # Work queue of folders directly inside `top`: each is emptied one level at a time; its
        # subfolders are renamed into `top`, so nothing is ever deeper than two levels.
        while True:
            names = os.listdir(top)
            if not names:
                break
            for child in names:
                try:
                    child_info = os.stat(child, dir_fd=top, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(child_info.st_mode):
                    os.unlink(child, dir_fd=top)
                    continue
                try:
                    os.rmdir(child, dir_fd=top)
                    continue
                except OSError:
                    pass
                sub = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
                try:
                    for grandchild in os.listdir(sub):
                        g_info = os.stat(grandchild, dir_fd=sub, follow_symlinks=False)
                        if stat.S_ISDIR(g_info.st_mode):
                            os.rename(grandchild, uuid.uuid4().hex, src_dir_fd=sub, dst_dir_fd=top)
                        else:
                            os.unlink(grandchild, dir_fd=sub)
                finally:
                    os.close(sub)
                os.rmdir(child, dir_fd=top)
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=parent_fd)


_open: dict[Path, Workspace] = {}
_registry_lock = threading.Lock()


def close_workspace(root: Path) -> None:
    """Close the workspace prepared at `root`, if any: for callers that may not have got the Workspace
    back (prepare_workspace raised) or that clean up after a crashed worker (a stale overlay left
    mounted at root/tree). Never raises for a workspace that is already gone."""
    with _registry_lock:
        workspace = _open.get(Path(root).resolve())
    if workspace is not None:
        workspace.close()
    else:
        try:
            _unmount(Path(root) / "tree")
            _unmount(Path(root) / "layer")  # after the overlay that uses it
        except OSError as exc:
            log.error("Could not unmount the stale workspace %s: %s", root, exc)


def close_stale_workspaces(under: Path) -> list[Path]:
    """Unmount the overlay workspaces below `under` whose process is gone (a worker that was killed
    mid-build leaves its overlay mounted). Call it when a worker starts and when stale builds are
    failed; the directories are left for the caller to remove. Returns the roots unmounted."""
    under = Path(under).resolve()
    unmounted = []
    for target in _overlay_mounts():
        if under not in target.parents or target.name != "tree":
            continue
        root = target.parent
        if _owner_alive(root / "owner"):
            continue
        try:
            _unmount(target)
            _unmount(root / "layer")
        except OSError as exc:
            log.error("Could not unmount the stale workspace %s: %s", root, exc)
            continue
        unmounted.append(root)
    return unmounted


def _overlay_mounts() -> list[Path]:
    mounts = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields, _, rest = line.partition(" - ")
            if rest.split(" ", 1)[0] == "overlay":
                # Mount points escape space, tab, newline and backslash in octal.
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields.split(" ")[4])
                mounts.append(Path(point))
    return mounts


def _process_identity(pid: int) -> str | None:
    """pid and start time: a pid alone may have been reused by another process."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid} {stat_line.rpartition(')')[2].split()[19]}"


def _owner_alive(owner_file: Path) -> bool:
    try:
        recorded = owner_file.read_text().strip()
        return _process_identity(int(recorded.split()[0])) == recorded
    except (OSError, ValueError, IndexError):
        return False


def prepare_workspace(
    mirror: Path,
    commit: str,
    root: Path,
    *,
    overlay: bool | None = None,
    owner: tuple[int, int] | None | str = "sandbox",
    keep_checkouts: int = KEEP_CHECKOUTS,
    quota: int = DISK_QUOTA,
    max_file_bytes: int = MAX_COMMITTED_FILE,
    deps: Path | None = None,
    deps_lease: int | None = None,
) -> Workspace:
    """Make `root/tree`, a directory with no .git inside holding `commit`, and this build's index.

    overlay: None (default) mounts an overlay over the shared checkout of `commit` when this process
    can, and otherwise checks the commit out in full, saying so in one log line; True insists on the
    overlay (ServiceError when it is not possible); False always checks out in full.
    owner: who the shared checkout belongs to; "sandbox" means SANDBOX_OWNER when running as root.
    quota: the bytes the build may write. An overlay's upper layer lives on a filesystem of that size
    (nosuid, nodev); a full checkout is measured by `Workspace.check_quota`.
    max_file_bytes: files larger than this are left out of commits.
    deps: a dependency layer's files (agents/deplayer.py), shown read-only on top of the commit: the
    overlay's top lower layer, so the build's writes to them go to its own layer; or, in a full
    checkout, copied into the tree. deps_lease: the fd leasing that layer; the workspace closes it when
    it is closed, or at once when preparing fails (the caller gives it up either way).
    """
    try:
        workspace = _prepare(mirror, commit, root, overlay, owner, keep_checkouts, quota, deps)
    except BaseException:
        if deps_lease is not None:
            os.close(deps_lease)
        raise
    workspace.max_file_bytes = max_file_bytes
    workspace.deps = deps
    workspace._deps_lease = deps_lease
    return workspace


def _prepare(
    mirror: Path,
    commit: str,
    root: Path,
    overlay: bool | None,
    owner: tuple[int, int] | None | str,
    keep_checkouts: int,
    quota: int,
    deps: Path | None,
) -> Workspace:
    if owner == "sandbox":
        owner = _sandbox_owner()
    if overlay is not False:
        reason = _overlay_unavailable(mirror, root, deps)
        if reason is None:
            try:
                return _prepare_overlay(mirror, commit, root, owner, keep_checkouts, quota, deps)
            except _NoOverlay as exc:
                reason = str(exc)
        if overlay:
            raise ServiceError("workspace_failed", f"an overlay workspace is not possible here: {reason}")
        log.warning("Overlay workspaces are not available (%s): checking %s out in full.", reason, commit[:12])
    workspace = Workspace(mirror=mirror, root=root, base=commit, quota=quota)
    workspace.tree.mkdir(parents=True, exist_ok=False)
    workspace._git("read-tree", commit)
    workspace._git("checkout-index", "--all", "--force")
    if deps is not None:
        try:
            copy_layer(deps, workspace.tree)
        except OSError as exc:
            raise ServiceError("workspace_failed", f"the dependency layer could not be copied in: {exc}") from exc
    return _register(workspace)


def _register(workspace: Workspace) -> Workspace:
    with _registry_lock:
        _open[workspace.root.resolve()] = workspace
    return workspace


# --- overlay workspaces ----------------------------------------------------------------------------


class _NoOverlay(Exception):
    """The overlay could not be mounted; the caller falls back to a full checkout."""


def checkouts_dir(mirror: Path) -> Path:
    """Where a mirror's shared checkouts live: beside it, private to the worker's user."""
    return mirror.with_name(mirror.name + ".checkouts")


def _sandbox_owner() -> tuple[int, int] | None:
    """SANDBOX_OWNER when this process may give files to it: real root, or root of a user namespace
    that maps that uid."""
    if os.geteuid() != 0:
        return None
    try:
        lines = Path("/proc/self/uid_map").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        inside, _, count = (int(n) for n in line.split())
        if inside <= SANDBOX_OWNER[0] < inside + count:
            return SANDBOX_OWNER
    return None


def _overlay_unavailable(mirror: Path, root: Path, deps: Path | None = None) -> str | None:
    if os.geteuid() != 0:
        return "the worker is not running as root"
    if _libc is None:
        return "libc's mount() is not reachable"
    for path in (checkouts_dir(mirror), root, *([deps] if deps is not None else [])):
        # Mount options are separated by commas, and lowerdir lists by colons.
        if any(c in str(path.absolute()) for c in ",:\\"):
            return f"the path {path} has a comma, colon or backslash"
    return None


def _prepare_overlay(
    mirror: Path, commit: str, root: Path, owner: tuple[int, int] | None, keep: int, quota: int, deps: Path | None
) -> Workspace:
    if not _SHA.match(commit):  # shared checkouts are named by commit: never by a branch that moves
        commit = git("rev-parse", "--verify", "--end-of-options", f"{commit}^{{commit}}", git_dir=mirror).strip()
    try:
        entry, lease = _lease_checkout(mirror, commit, owner, keep)
    except OSError as exc:
        raise ServiceError("workspace_failed", f"the shared checkout of {commit[:12]} failed: {exc}") from exc
    layer = root / "layer"
    workspace = Workspace(
        mirror=mirror, root=root, base=commit, lower=entry / "tree", layer=layer, quota=quota, _lease=lease
    )
    index, owner_file = root / "index", root / "owner"
    made: list[Path] = []
    try:
        for path in (workspace.tree, layer):
            path.mkdir(parents=True, exist_ok=False)
            made.append(path)
        made.append(owner_file)
        owner_file.write_text(f"{_process_identity(os.getpid())}\n")  # see close_stale_workspaces
        _mount_layer(layer, quota)
        upper, work = layer / "upper", layer / "work"
        for path in (upper, work):
            path.mkdir()
        work.chmod(0o700)
        # The merged tree's root directory is the upper layer's: give it the lower root's mode and owner.
        lower_root = os.stat(workspace.lower)
        upper.chmod(stat.S_IMODE(lower_root.st_mode))
        os.chown(upper, lower_root.st_uid, lower_root.st_gid)
        # A copy, so the index file is newer than every file of the checkout: git then trusts the
        # recorded stat data instead of re-reading "racily clean" files.
        shutil.copyfile(entry / "index", index)
        made.append(index)
        # The dependency layer sits above the checkout: its files (node_modules, a .venv, and what setup
        # changed or deleted, as whiteouts) win over the commit's, and like the checkout it is never
        # written: a build changing one of its files gets its own copy in its upper layer.
        lowers = [deps, workspace.lower] if deps is not None else [workspace.lower]
        _mount_overlay(lowers, upper, work, workspace.tree)
    except OSError as exc:
        os.close(lease)
        try:
            _unmount(layer)
        except OSError:
            pass
        (root / "layer.img").unlink(missing_ok=True)
        for path in reversed(made):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise ServiceError("workspace_failed", f"the workspace {root} is already in use") from exc
        if workspace.tree in made:  # the full checkout goes where the overlay would have been
            raise _NoOverlay(f"the overlay could not be set up: {exc}") from exc
        raise ServiceError("workspace_failed", f"the workspace {root} could not be made: {exc}") from exc
    return _register(workspace)


def _mount_layer(layer: Path, quota: int) -> None:
    """Mount the filesystem that holds a build's own files at `layer`: `quota` bytes, nosuid, nodev.

    First choice, an ext4 image on a loop device beside it (a sparse file: it takes only the disk the
    build uses, and no memory); where loop devices are not available (many containers), a tmpfs of the
    same size, which holds the build's files in memory (and swap). Raises OSError when neither works."""
    image = layer.with_name("layer.img")
    mkfs, mount = shutil.which("mkfs.ext4"), shutil.which("mount")
    if mkfs and mount and os.path.exists("/dev/loop-control"):
        try:
            with open(image, "wb") as handle:
                handle.truncate(quota)
            # No journal and no reserved blocks: a throwaway filesystem, and all of it for the build.
            subprocess.run([mkfs, "-q", "-F", "-m", "0", "-i", "8192", "-O", "^has_journal",
                            "-E", "lazy_itable_init=1", str(image)], check=True, capture_output=True, timeout=60)  # fmt: skip
            subprocess.run([mount, "-o", "loop,nosuid,nodev", str(image), str(layer)], check=True,
                           capture_output=True, timeout=60)  # fmt: skip
            return
        except (OSError, subprocess.SubprocessError) as exc:
            image.unlink(missing_ok=True)
            detail = (
                exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else exc
            )
            log.info("A loop-mounted build layer is not possible here (%s): using a tmpfs.", detail)
    options = f"size={quota},mode=0700"
    if _libc.mount(b"tmpfs", os.fsencode(layer), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mounting the build's layer: {os.strerror(code)}")


def _lease_checkout(mirror: Path, commit: str, owner: tuple[int, int] | None, keep: int) -> tuple[Path, int]:
    """The shared checkout of `commit`, created on first use, and an fd of its directory holding a
    shared lock: pruning skips checkouts that are leased (an overlay must never lose its lower layer).

    Two locks, so that a build never waits for another build to end: `<commit>.lock` is held (exclusive)
    only while the checkout is made, and the lease is a shared lock on the checkout directory itself."""
    base = checkouts_dir(mirror)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    entry = base / commit
    created = False
    for _ in range(5):
        if not entry.is_dir():
            fd = _flock(base / f"{commit}.lock", fcntl.LOCK_EX)
            try:
                if not entry.is_dir():
                    _create_checkout(mirror, commit, entry, owner)
                    created = True
            finally:
                os.close(fd)
        lease = lease_entry(entry)
        if lease is None:
            continue  # pruned in between: make it again
        if created:
            prune_checkouts(mirror, keep=keep)
        return entry, lease
    raise ServiceError("workspace_failed", f"the shared checkout of {commit[:12]} kept disappearing")


def lease_entry(entry: Path) -> int | None:
    """An fd of the store entry `entry` (a shared checkout, a dependency layer) holding a shared lock,
    or None when it is gone. While the fd is open, pruning skips the entry. Marks it recently used."""
    try:
        lease = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    fcntl.flock(lease, fcntl.LOCK_SH)
    if not _same_file(lease, entry):  # pruned (renamed away) while we waited
        os.close(lease)
        return None
    os.utime(entry)  # recently used: the last to be pruned
    return lease


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _flock(path: Path, operation: int) -> int:
    """An fd of the lock file at `path`, locked. Pruning unlinks lock files, so after waiting for the
    lock, check that the path still names the file that was locked, or start again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, operation)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _create_checkout(mirror: Path, commit: str, entry: Path, owner: tuple[int, int] | None) -> None:
    """Check `commit` out into entry/tree, with its index (stat data refreshed) at entry/index. Built
    aside and renamed into place, so a crash never leaves a half checkout that looks ready."""
    partial = entry.with_name(entry.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tree = partial / "tree"
    tree.mkdir(parents=True)
    env = {"GIT_INDEX_FILE": str(partial / "index"), "GIT_WORK_TREE": str(tree)}
    git("read-tree", commit, git_dir=mirror, env=env)
    git("checkout-index", "--all", "--force", git_dir=mirror, env=env)
    checked_out = time.time()
    if owner is not None:
        _give_tree(tree, *owner)
    # checkout-index leaves the index's stat data empty, and the chown changed every ctime: record
    # what is on disk now, once, so that no build has to hash the unchanged files again.
    git("update-index", "-q", "--refresh", git_dir=mirror, env=env)
    # Git compares a file's mtime with its index file's in whole seconds, and re-reads files that are
    # not older ("racily clean"). Step past the checkout's last second, so that the index each build
    # copies is always newer than every file of the checkout.
    time.sleep(max(0.0, math.floor(checked_out) + 1 - time.time()))
    partial.rename(entry)


def _give_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for _, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in dirnames + filenames:
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)


# --- dependency layers in full checkouts ----------------------------------------------------------

OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


def is_whiteout(info: os.stat_result) -> bool:
    """An overlay whiteout: the character device 0:0 that says "the file of this name is deleted"."""
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def _opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def copy_layer(layer: Path, tree: Path) -> None:
    """Copy an overlay layer's files into a full checkout so the tree shows what mounting the layer
    above it would: a whiteout deletes the entry it names, an opaque folder replaces the folder below.

    The checkout is the repository's content, which may hold links such as `node_modules -> /etc`:
    nothing in `tree` is ever followed. Whatever is in the way of a layer's entry is removed first and
    the entry made anew (folders level by level, from the top), so every write lands inside the tree.
    Owners are kept when running as root, modes and times always."""
    as_root = os.geteuid() == 0
    folders: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(layer):  # top-down, never into links
        rel = os.path.relpath(dirpath, layer)
        dest = tree if rel == "." else tree / rel
        if rel != ".":
            try:
                info = os.lstat(dest)
            except FileNotFoundError:
                info = None
            if info is not None and (not stat.S_ISDIR(info.st_mode) or _opaque(dirpath)):
                remove_tree(dest)
                info = None
            if info is None:
                os.mkdir(dest, 0o700)
        folders.append((dirpath, dest))
        links = [name for name in dirnames if os.path.islink(os.path.join(dirpath, name))]
        dirnames[:] = [name for name in dirnames if name not in links]
        for name in filenames + links:
            source, target = os.path.join(dirpath, name), dest / name
            info = os.lstat(source)
            if os.path.lexists(target):
                remove_tree(target)
            if is_whiteout(info):
                continue
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), target)
                if as_root:
                    os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
            elif stat.S_ISREG(info.st_mode):
                copy_file(source, target, info, keep_owner=as_root)
            # FIFOs, sockets and devices are never part of a layer's use: left out
    for source, dest in reversed(folders):  # modes last: a read-only folder is filled first
        shutil.copystat(source, dest, follow_symlinks=False)
        if as_root:
            info = os.lstat(source)
            os.chown(dest, info.st_uid, info.st_gid, follow_symlinks=False)


def copy_file(source: str | Path, target: str | Path, info: os.stat_result, *, keep_owner: bool) -> None:
    """Copy a regular file (`info` is its lstat) to a new `target`, with its mode, times and, when asked,
    owner, but never its setuid or setgid bit. The files come from commands in the sandbox, and a copy
    made by root is root's until it is given away: it must never be, even for a moment, a setuid program
    of root's on a filesystem that honours it."""
    with open(source, "rb") as reader, open(target, "xb") as writer:  # "x": never through a planted link
        os.fchmod(writer.fileno(), 0o600)
        shutil.copyfileobj(reader, writer, 1 << 20)
        if keep_owner:
            os.fchown(writer.fileno(), info.st_uid, info.st_gid)
        os.fchmod(writer.fileno(), stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def prune_checkouts(mirror: Path, *, keep: int = KEEP_CHECKOUTS) -> list[str]:
    """Remove all but the `keep` most recently used shared checkouts of a mirror, skipping any that a
    workspace still uses. Returns the commits removed."""
    return prune_store(checkouts_dir(mirror), keep=keep, named=_SHA)


def prune_store(base: Path, *, keep: int, named: re.Pattern) -> list[str]:
    """The one pruning rule of the stores beside a mirror (shared checkouts, dependency layers): remove
    all but the `keep` most recently used entries of `base` whose names match `named`, skipping any
    that is leased (see lease_entry). Returns the names removed."""
    if not base.is_dir():
        return []
    entries = []
    for entry in base.iterdir():
        try:
            if named.fullmatch(entry.name) and entry.is_dir():
                entries.append((entry.stat().st_mtime, entry))
        except FileNotFoundError:
            continue
    removed = []
    for _, entry in sorted(entries, reverse=True)[keep:]:
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # leased by a workspace
            if not _same_file(fd, entry):
                continue
            # Renamed away while locked: a build leasing it next finds it gone and makes it again.
            trash = base / f".trash-{uuid.uuid4().hex}"
            entry.rename(trash)
        except OSError:
            continue
        finally:
            os.close(fd)
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(entry.name)
        _forget_lock(base, entry.name)
    for trash in base.glob(".trash-*"):  # left by a pruner that crashed
        shutil.rmtree(trash, ignore_errors=True)
    return removed


def _forget_lock(base: Path, commit: str) -> None:
    """Remove a pruned checkout's lock file and any half-made checkout, unless it is being made again."""
    lock = base / f"{commit}.lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, lock):
            shutil.rmtree(base / f"{commit}.partial", ignore_errors=True)
            lock.unlink()
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _load_libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
        libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
        return libc
    except (OSError, AttributeError):
        return None


_libc = _load_libc()
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2


def _mount_overlay(lowers: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount an overlay at target; `lowers` top first (lowerdir lists layers from the top down)."""
    lowerdir = ":".join(str(lower.absolute()) for lower in lowers)
    options = f"lowerdir={lowerdir},upperdir={upper.absolute()},workdir={work.absolute()}"
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", MS_NOSUID | MS_NODEV, os.fsencode(options)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _unmount(target: Path) -> None:
    """Unmount target if it is a mount point; lazily when something on the host still holds the tree
    open (sandboxes see it through mount namespaces of their own, which do not keep it busy)."""
    if _libc is None or not os.path.ismount(target):
        return
    if _libc.umount2(os.fsencode(target), 0) == 0:
        return
    code = ctypes.get_errno()
    if code == errno.EBUSY and _libc.umount2(os.fsencode(target), MNT_DETACH) == 0:
        return
    code = ctypes.get_errno()
    raise OSError(code, f"unmounting {target}: {os.strerror(code)}")
