"""Dependencies, once: what a recipe's [setup] installed, kept as a read-only layer for later builds.

Setup (npm ci, pip install, a Maven download…) runs once per target and key, not once per build. The
key is a sha256 over what decides what setup produces: the setup commands, the [toolchain] versions,
the lock-input patterns, and the content of the lock inputs at the commit the build starts from (their
git blob ids, read in one `git ls-tree` from the mirror: no checkout, nothing hashed twice). Lock inputs
are files whose NAME matches one of `Recipe.lock_inputs` (fnmatch), anywhere in the tree except inside
folders that hold installed packages (INSTALLED); a pattern with a slash matches the path instead.

The layers live beside the mirror, like the shared checkouts: `<mirror>.layers/<key>/tree` holds the
files, `layer.json` when and from what it was made. A build that finds its key (a hit) mounts the layer
as an extra read-only lower layer of its overlay, above the shared checkout, and runs no setup: no
network at all. A build that does not (a miss) runs setup as before, and what setup wrote becomes the
layer: with an overlay that is exactly the build's upper layer (copied with `cp -a`, which keeps
owners, modes, xattrs and whiteouts), in a full checkout the files `git status` shows as new, ignored
or changed. The copy is made in a temporary folder of the store and renamed into place, so a layer is
whole or absent; two builds racing for one key both copy, and the second rename fails: that build
throws its copy away. A layer is leased (a shared flock on its folder) while a workspace uses it, and
pruned by the same rule as the checkouts (agents.workspace.prune_store).

Trust: a layer is made by untrusted commands (the repository's own install scripts), and every later
build of its key runs on top of it. Builds that start from the target's own code (a first revision, a
baseline) share layers. A follow-up starts from a prototype's earlier result, which the agent wrote: it
may use a shared layer of its key, but what its own setup makes is kept under a key scoped to that
prototype (`scope`), so no prototype can plant files in other people's builds.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agents.recipe import Recipe
from agents.workspace import (
    MAX_ENTRIES,
    Workspace,
    copy_file,
    git,
    is_whiteout,
    lease_entry,
    prune_store,
    remove_tree,
)

FORMAT = 1  # part of every key: a change in how layers are made makes new ones
KEEP_LAYERS = 4  # dependency layers kept per mirror (least recently used are removed, never leased ones)
LAYER_NAME = re.compile(r"[0-9a-f]{64}")
# Folders holding installed packages: lockfiles inside them belong to the packages, not to the project.
INSTALLED = frozenset({
    ".git", "node_modules", "bower_components", ".venv", "venv", "site-packages", "__pycache__",
    ".m2", ".gradle", ".gradle-home", ".yarn", ".pnpm-store", "vendor", "target",
})  # fmt: skip
META = "layer.json"
PARTIAL_AGE = 24 * 3600  # seconds after which a half-made layer is a crashed worker's


@dataclass
class DepLayer:
    """One build's dependency layer: the one it uses (`hit`, leased) or the key a miss stores under."""

    store: Path  # <mirror>.layers
    key: str  # where this build's setup result goes (a miss)
    files: tuple[tuple[str, str], ...]  # the lock inputs found at the start commit: (path, blob id)
    hit: Path | None = None  # the layer entry in use
    made: str = ""  # when the layer in use was made, for the log
    lease: int | None = None  # the hit's lease, until the workspace takes it (take_lease)

    @property
    def tree(self) -> Path | None:
        return self.hit / "tree" if self.hit is not None else None

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(path for path, _ in self.files)

    def take_lease(self) -> int | None:
        """Hand the lease over (to prepare_workspace, which closes it with the workspace)."""
        lease, self.lease = self.lease, None
        return lease

    def release(self) -> None:
        if self.lease is not None:
            os.close(self.lease)
            self.lease = None

    def describe(self) -> str:
        """What the build log says on a hit."""
        return f"Dependencies from the layer made on {self.made} for {describe_inputs(self.inputs)} (setup skipped)."


def describe_inputs(inputs: tuple[str, ...]) -> str:
    if not inputs:
        return "the setup commands alone (no lock files found)"
    shown = ", ".join(inputs[:5])
    return shown + (f" and {len(inputs) - 5} more" if len(inputs) > 5 else "")


def layers_dir(mirror: Path) -> Path:
    """Where a mirror's dependency layers live: beside it, like its shared checkouts."""
    return mirror.with_name(mirror.name + ".layers")


def scope_for(start_commit: str | None, result_ref: str) -> str:
    """The scope of a build's own layer: "" (shared by the target's builds) when it starts from the
    target's code, else the prototype whose earlier result it starts from (`refs/prototypes/<p>`)."""
    if not start_commit:
        return ""
    return result_ref.rsplit("/", 1)[0] or result_ref


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether `path` (relative, with slashes) is a lock input: its name matches a pattern, or its whole
    path a pattern with a slash; never inside a folder of installed packages."""
    parts = path.split("/")
    if any(part in INSTALLED for part in parts[:-1]):
        return False
    return any(fnmatch.fnmatchcase(path if "/" in pattern else parts[-1], pattern) for pattern in patterns)


def lock_inputs(mirror: Path, commit: str, patterns: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(path, blob id) of every lock input at `commit`, from one `git ls-tree` of the mirror."""
    listing = git("ls-tree", "-r", "-z", "--full-tree", commit, git_dir=mirror)
    found = []
    for record in listing.split("\0"):
        meta, _, path = record.partition("\t")
        fields = meta.split()
        if len(fields) == 3 and fields[1] == "blob" and matches(path, patterns):
            found.append((path, fields[2]))
    return tuple(sorted(found))


def layer_key(recipe: Recipe, files: tuple[tuple[str, str], ...], scope: str = "") -> str:
    """The key of a layer: what setup would produce is decided by these, and only these. (The setup
    timeout is left out: it changes how long setup may take, not what it installs.)"""
    payload = {
        "format": FORMAT,
        "setup": list(recipe.setup),
        "toolchain": [list(pair) for pair in recipe.toolchain],
        "patterns": list(recipe.lock_inputs),
        "files": [list(pair) for pair in files],
        "scope": scope,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def find_layer(mirror: Path, commit: str, recipe: Recipe, *, scope: str = "") -> DepLayer | None:
    """The dependency layer for a build starting at `commit`: a hit (leased: the caller gives the lease
    to the workspace or releases it) or the key a miss stores under. None when the recipe has no setup
    commands: nothing to keep, nothing changes."""
    if not recipe.setup:
        return None
    files = lock_inputs(mirror, commit, recipe.lock_inputs)
    store = layers_dir(mirror)
    keys = [layer_key(recipe, files)]
    if scope:  # the shared layer if there is one, else the prototype's own
        keys.append(layer_key(recipe, files, scope))
    for key in keys:
        entry = store / key
        lease = lease_entry(entry)
        if lease is None:
            continue
        try:
            made = json.loads((entry / META).read_text())["made"]
        except (OSError, ValueError, KeyError, TypeError):
            os.close(lease)  # not a layer this code made whole: ignored, and pruned in time
            continue
        return DepLayer(store, key, files, hit=entry, made=made, lease=lease)
    return DepLayer(store, keys[-1], files)


def store_layer(layer: DepLayer, workspace: Workspace, *, keep: int = KEEP_LAYERS) -> bool:
    """Keep what setup wrote in `workspace` as the layer `layer.key`. Returns False when another build
    stored that key first (this copy is thrown away). Raises OSError when the copy fails; nothing is
    left behind then. Call it right after a setup that succeeded, before anything else writes."""
    store = layer.store
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = store / f".partial-{uuid.uuid4().hex}"
    try:
        partial.mkdir(mode=0o700)
        if workspace.upper is not None:
            _copy_upper(workspace, partial / "tree")
        else:
            _copy_setup_output(workspace, partial / "tree")
        made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        meta = {"format": FORMAT, "made": made, "commit": workspace.base, "inputs": list(layer.inputs)}
        (partial / META).write_text(json.dumps(meta, indent=1) + "\n")
        try:
            partial.rename(store / layer.key)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False  # another build stored this key first: theirs is as good as ours
            raise
    finally:
        remove_tree(partial)  # gone already when the rename succeeded
    prune_layers(store, keep=keep)
    return True


def prune_layers(store: Path, *, keep: int = KEEP_LAYERS) -> list[str]:
    """Remove all but the `keep` most recently used layers of a store, never one in use, and copies a
    crashed worker left half made (a day old: no build copies for that long)."""
    for partial in store.glob(".partial-*"):
        try:
            if partial.stat().st_mtime < time.time() - PARTIAL_AGE:
                remove_tree(partial)
        except FileNotFoundError:
            continue
    return prune_store(store, keep=keep, named=LAYER_NAME)


def _copy_upper(workspace: Workspace, to: Path) -> None:
    """The overlay's upper layer is exactly what the build wrote: copy it whole. `cp -a` keeps owners,
    modes, times, xattrs (an opaque folder) and whiteouts (a deleted file), so the copy mounted as a
    lower layer shows what the build saw. The upper layer belongs to the sandbox's user and sits on a
    nosuid, nodev filesystem; the copy is mounted nosuid and nodev too, so nothing in it gains rights."""
    try:
        subprocess.run(
            ["cp", "-a", "--", f"{workspace.upper}/.", str(to)], check=True, capture_output=True,
            timeout=workspace.time_left(),
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise OSError(f"copying the setup's files failed: {exc.stderr.decode(errors='replace')[-500:]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise OSError("copying the setup's files took longer than the build's time left") from exc


def _copy_setup_output(workspace: Workspace, to: Path) -> None:
    """A full checkout (no overlay): the layer is every path `git status` shows as new, ignored or
    changed after setup (the checkout was clean before it). Deletions cannot be kept without whiteouts
    (not root): they are left out, and a hit shows those files again."""
    to.mkdir(mode=0o700)
    for path in workspace.written():
        _copy_entry(workspace.tree, path, to)
    shutil.copystat(workspace.tree, to, follow_symlinks=False)


def _copy_entry(tree: Path, path: str, to: Path) -> None:
    """Copy tree/path to to/path, links as links (never followed), making its folders on the way."""
    parents = list(Path(path).parents)[:-1]  # a/b/c -> a/b, a
    for parent in reversed(parents):
        if not (to / parent).is_dir():
            (to / parent).mkdir()
            shutil.copystat(tree / parent, to / parent, follow_symlinks=False)
    source, dest = tree / path, to / path
    info = os.lstat(source)
    if stat.S_ISDIR(info.st_mode):
        shutil.copytree(source, dest, symlinks=True, copy_function=_copy_plain)
    elif stat.S_ISREG(info.st_mode):
        copy_file(source, dest, info, keep_owner=False)
    elif stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), dest)


def _copy_plain(source: str, dest: str) -> None:
    info = os.lstat(source)
    if stat.S_ISREG(info.st_mode):  # inspect_tree took out FIFOs, sockets and devices before
        copy_file(source, dest, info, keep_owner=False)


def lock_state(root: Path, patterns: tuple[str, ...]) -> dict[str, str]:
    """The lock inputs under `root`: path -> git blob id of the content ("deleted" for a whiteout,
    "link <target>" for a link). Folders of installed packages are skipped, and the walk stops at
    MAX_ENTRIES entries (a tree the sandbox wrote may be huge: what was seen is what counts)."""
    state: dict[str, str] = {}
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if name not in INSTALLED]
        for name in filenames:
            seen += 1
            if seen > MAX_ENTRIES:
                return state
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if not matches(rel, patterns):
                continue
            try:
                info = os.lstat(full)
                if is_whiteout(info):
                    state[rel] = "deleted"
                elif stat.S_ISREG(info.st_mode):
                    state[rel] = _blob_id(full)
                elif stat.S_ISLNK(info.st_mode):
                    state[rel] = "link " + os.readlink(full)
            except OSError:
                continue
    return state


def _blob_id(path: str) -> str:
    """The id git gives this content: a lock file the build left unchanged matches its commit's blob."""
    with open(path, "rb") as handle:
        digest = hashlib.sha1(f"blob {os.fstat(handle.fileno()).st_size}\0".encode(), usedforsecurity=False)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LockWatch:
    """The lock files of one build as its last setup left them, so that `changed()` names those the
    agent changed since (the next verify runs setup again first).

    With an overlay only the build's own layer is walked (the files it wrote: cheap, whatever the size
    of the repository), and a file there counts as changed only when its content differs from what
    the build started with: the start commit's blob, or the dependency layer's file. A full checkout
    is walked whole (skipping installed packages) and compared both ways."""

    def __init__(self, workspace: Workspace, recipe: Recipe, files: tuple[tuple[str, str], ...]):
        self.workspace = workspace
        self.patterns = recipe.lock_inputs
        self.before: dict[str, str] = dict(files)
        if workspace.upper is not None and workspace.deps is not None:
            self.before.update(lock_state(workspace.deps, self.patterns))
        self.reset()

    def _now(self) -> dict[str, str]:
        return lock_state(self.workspace.upper or self.workspace.tree, self.patterns)

    def reset(self) -> None:
        """Take the tree as it is now as the state setup made (call after setup ran)."""
        now = self._now()
        if self.workspace.upper is not None:
            self.before.update(now)
        else:
            self.before = now

    def changed(self) -> list[str]:
        now = self._now()
        paths = now.keys() if self.workspace.upper is not None else now.keys() | self.before.keys()
        return sorted(path for path in paths if now.get(path) != self.before.get(path))
