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
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
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
# Who runs sandboxed commands when the worker is root (BwrapSandbox.host_uid/host_gid). Shared checkouts
# belong to this user from the start, so that giving the workspace to it changes nothing in the lower
# layer (a chown through overlay would copy every file up).
SANDBOX_OWNER = (65534, 65534)
KEEP_CHECKOUTS = 4  # shared checkouts kept per mirror (least recently used are removed)

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
    """One build's working tree (`tree`, bound into the sandbox) and its private index.

    `lower` is the shared checkout when the tree is an overlay over it (None for a full checkout).
    Call `close()` when the build is over: it unmounts the overlay and removes this build's files.
    """

    mirror: Path
    root: Path
    base: str
    exclude: tuple[str, ...] = ()  # paths never committed (the build's output)
    lower: Path | None = None
    _lease: int | None = field(default=None, repr=False, compare=False)

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    @property
    def overlay(self) -> bool:
        return self.lower is not None

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

    def close(self) -> None:
        """Unmount the overlay and remove this build's files (the tree's content, the upper layer).
        Commit first: what is not committed is gone. Safe to call twice."""
        with _registry_lock:
            _open.pop(self.root.resolve(), None)
        if self.overlay:
            try:
                _unmount(self.tree)
            except OSError as exc:  # never end the build with an error of ours at the very end
                log.error("Could not unmount the workspace %s: %s", self.tree, exc)
                return  # and keep the lease: the lower layer must outlive the mount
            for name in ("upper", "work"):
                shutil.rmtree(self.root / name, ignore_errors=True)
        else:
            shutil.rmtree(self.tree, ignore_errors=True)
        if self._lease is not None:
            os.close(self._lease)  # the shared checkout may be pruned again
            self._lease = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
) -> Workspace:
    """Make `root/tree`, a directory with no .git inside holding `commit`, and this build's index.

    overlay: None (default) mounts an overlay over the shared checkout of `commit` when this process
    can, and otherwise checks the commit out in full, saying so in one log line; True insists on the
    overlay (ServiceError when it is not possible); False always checks out in full.
    owner: who the shared checkout belongs to; "sandbox" means SANDBOX_OWNER when running as root.
    """
    if owner == "sandbox":
        owner = _sandbox_owner()
    if overlay is not False:
        reason = _overlay_unavailable(mirror, root)
        if reason is None:
            try:
                return _prepare_overlay(mirror, commit, root, owner, keep_checkouts)
            except _NoOverlay as exc:
                reason = str(exc)
        if overlay:
            raise ServiceError("workspace_failed", f"an overlay workspace is not possible here: {reason}")
        log.warning("Overlay workspaces are not available (%s): checking %s out in full.", reason, commit[:12])
    workspace = Workspace(mirror=mirror, root=root, base=commit)
    workspace.tree.mkdir(parents=True, exist_ok=False)
    workspace._git("read-tree", commit)
    workspace._git("checkout-index", "--all", "--force")
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


def _overlay_unavailable(mirror: Path, root: Path) -> str | None:
    if os.geteuid() != 0:
        return "the worker is not running as root"
    if _libc is None:
        return "libc's mount() is not reachable"
    for path in (checkouts_dir(mirror), root):
        # Mount options are separated by commas, and lowerdir lists by colons.
        if any(c in str(path.absolute()) for c in ",:\\"):
            return f"the path {path} has a comma, colon or backslash"
    return None


def _prepare_overlay(mirror: Path, commit: str, root: Path, owner: tuple[int, int] | None, keep: int) -> Workspace:
    if not _SHA.match(commit):  # shared checkouts are named by commit: never by a branch that moves
        commit = git("rev-parse", "--verify", "--end-of-options", f"{commit}^{{commit}}", git_dir=mirror).strip()
    try:
        entry, lease = _lease_checkout(mirror, commit, owner, keep)
    except OSError as exc:
        raise ServiceError("workspace_failed", f"the shared checkout of {commit[:12]} failed: {exc}") from exc
    workspace = Workspace(mirror=mirror, root=root, base=commit, lower=entry / "tree", _lease=lease)
    upper, work, index, owner_file = root / "upper", root / "work", root / "index", root / "owner"
    made: list[Path] = []
    try:
        for path in (workspace.tree, upper, work):
            path.mkdir(parents=True, exist_ok=False)
            made.append(path)
        work.chmod(0o700)
        # The merged tree's root directory is the upper layer's: give it the lower root's mode and owner.
        lower_root = os.stat(workspace.lower)
        upper.chmod(stat.S_IMODE(lower_root.st_mode))
        os.chown(upper, lower_root.st_uid, lower_root.st_gid)
        # A copy, so the index file is newer than every file of the checkout: git then trusts the
        # recorded stat data instead of re-reading "racily clean" files.
        shutil.copyfile(entry / "index", index)
        made.append(index)
        made.append(owner_file)
        owner_file.write_text(f"{_process_identity(os.getpid())}\n")  # see close_stale_workspaces
        _mount_overlay(workspace.lower, upper, work, workspace.tree)
    except OSError as exc:
        os.close(lease)
        for path in reversed(made):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise ServiceError("workspace_failed", f"the workspace {root} is already in use") from exc
        if workspace.tree in made:  # the full checkout goes where the overlay would have been
            raise _NoOverlay(f"the overlay could not be set up: {exc}") from exc
        raise ServiceError("workspace_failed", f"the workspace {root} could not be made: {exc}") from exc
    return _register(workspace)


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
        try:
            lease = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # pruned in between: make it again
        fcntl.flock(lease, fcntl.LOCK_SH)
        if _same_file(lease, entry):
            os.utime(entry)  # recently used: the last to be pruned
            if created:
                prune_checkouts(mirror, keep=keep)
            return entry, lease
        os.close(lease)
    raise ServiceError("workspace_failed", f"the shared checkout of {commit[:12]} kept disappearing")


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


def prune_checkouts(mirror: Path, *, keep: int = KEEP_CHECKOUTS) -> list[str]:
    """Remove all but the `keep` most recently used shared checkouts of a mirror, skipping any that a
    workspace still uses. Returns the commits removed."""
    base = checkouts_dir(mirror)
    if not base.is_dir():
        return []
    entries = []
    for entry in base.iterdir():
        try:
            if _SHA.match(entry.name) and entry.is_dir():
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


def _mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    options = f"lowerdir={lower.absolute()},upperdir={upper.absolute()},workdir={work.absolute()}"
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
