"""Workspaces on real git: the mirror, overlay workspaces over a shared checkout, the full-checkout
fallback, committing results, and host git that never runs anything planted in the tree."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agents import workspace as ws
from agents.errors import ServiceError

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="overlay workspaces are mounted by root")

FILES = {
    "app/main.py": "print('hello')\n",
    "app/util/text.py": "def shout(s):\n    return s.upper()\n",
    "README.md": "# App\n",
}


@pytest.fixture
def origin(make_repo):
    return make_repo(FILES)


@pytest.fixture
def place(scratch_dir):
    return scratch_dir("ws-")


@pytest.fixture
def mirror(origin, place):
    path = place / "mirrors" / "app.git"
    ws.sync_mirror(str(origin), path)
    return path


@pytest.fixture
def commit(mirror):
    return ws.resolve(mirror, "main")


@pytest.fixture
def workspaces():
    """Closes whatever a test prepared, so no overlay outlives its test."""
    opened: list[ws.Workspace] = []
    yield opened
    for workspace in opened:
        workspace.close()


def prepare(workspaces, mirror, commit, root, **kw) -> ws.Workspace:
    workspace = ws.prepare_workspace(mirror, commit, root, **kw)
    workspaces.append(workspace)
    return workspace


def git_in(repo: Path, *args: str) -> str:
    return ws.git("-C", str(repo), *args)


def commit_in_origin(origin: Path, files: dict[str, str], message: str = "More") -> None:
    for name, text in files.items():
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        (origin / name).write_text(text)
    git_in(origin, "add", "--all")
    git_in(origin, "commit", "-q", "-m", message)


# --- the mirror ------------------------------------------------------------------------------------


def test_two_builds_syncing_the_same_mirror_at_once_both_end_fine(origin, place):
    mirror = place / "app.git"
    errors: list[BaseException] = []

    def sync():
        try:
            ws.sync_mirror(str(origin), mirror)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=sync) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ws.resolve(mirror, "main") == git_in(origin, "rev-parse", "HEAD").strip()
    assert ws.git("symbolic-ref", "HEAD", git_dir=mirror).strip() == "refs/heads/main"


def test_a_later_sync_never_prunes_prototype_results(origin, mirror, commit, place, workspaces):
    workspace = prepare(workspaces, mirror, commit, place / "b1", overlay=False)
    (workspace.tree / "app" / "main.py").write_text("print('hi')\n")
    result = workspace.commit("Say hi", "refs/prototypes/hello/1")
    git_in(origin, "checkout", "-q", "-b", "gone")
    git_in(origin, "branch", "-q", "-D", "main")
    commit_in_origin(origin, {"NEW.md": "new\n"})

    ws.sync_mirror(str(origin), mirror)

    assert ws.git("rev-parse", "refs/prototypes/hello/1", git_dir=mirror).strip() == result
    assert ws.resolve(mirror, "gone") != commit
    assert ws.git("branch", "--list", "main", git_dir=mirror).strip() == ""  # branches are pruned


# --- committing results ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [pytest.param(None, marks=needs_root), False], ids=["overlay", "full"])
def test_the_result_is_committed_on_top_of_the_base(mirror, commit, place, workspaces, overlay):
    workspace = prepare(workspaces, mirror, commit, place / "b1", overlay=overlay)
    assert workspace.overlay is (overlay is None)
    (workspace.tree / "app" / "main.py").write_text("print('hello')\nprint('world')\n")
    (workspace.tree / "app" / "new.py").write_text("x = 1\n")
    (workspace.tree / "README.md").unlink()
    assert workspace.changed()

    result = workspace.commit("Greet the world\n\nTwo lines now.\n", "refs/prototypes/greet/2")

    assert ws.git("rev-parse", "refs/prototypes/greet/2", git_dir=mirror).strip() == result
    assert ws.git("rev-parse", f"{result}^", git_dir=mirror).strip() == commit
    assert ws.git("log", "-1", "--format=%s", result, git_dir=mirror).strip() == "Greet the world"
    assert ws.read_file(mirror, result, "app/new.py") == "x = 1\n"
    assert ws.read_file(mirror, result, "README.md") is None
    stat = workspace.diffstat(result)
    assert stat.files == (("README.md", 0, 1), ("app/main.py", 1, 0), ("app/new.py", 1, 0))
    assert (stat.added, stat.deleted) == (2, 1)
    diff = workspace.diff(result)
    assert "+print('world')" in diff and "deleted file mode" in diff
    assert "+print('world')" in workspace.pending_diff()


def test_an_untouched_workspace_has_no_changes(mirror, commit, place, workspaces):
    workspace = prepare(workspaces, mirror, commit, place / "b1")
    assert not workspace.changed()
    assert workspace.pending_diff() == ""


def test_the_build_output_is_kept_out_of_the_commit(mirror, commit, place, workspaces):
    workspace = prepare(workspaces, mirror, commit, place / "b1")
    (workspace.tree / "dist").mkdir()
    (workspace.tree / "dist" / "app.tar").write_bytes(b"\0" * 100)
    (workspace.tree / "app" / "main.py").write_text("print('changed')\n")
    workspace.exclude = ("dist",)

    result = workspace.commit("Change", "refs/prototypes/out/1")

    assert ws.list_files(mirror, result) == ["README.md", "app/main.py", "app/util/text.py"]


# --- overlay workspaces ----------------------------------------------------------------------------


def test_there_is_no_git_folder_in_the_tree(mirror, commit, place, workspaces):
    workspace = prepare(workspaces, mirror, commit, place / "b1")
    assert not (workspace.tree / ".git").exists()
    assert sorted(p.name for p in workspace.tree.iterdir()) == ["README.md", "app"]


@needs_root
def test_builds_of_one_commit_share_one_checkout_and_keep_their_changes_apart(mirror, commit, place, workspaces):
    first = prepare(workspaces, mirror, commit, place / "b1")
    second = prepare(workspaces, mirror, commit, place / "b2")

    third = prepare(workspaces, mirror, "main", place / "b3")  # a branch name means its commit
    assert first.overlay and second.overlay and third.base == commit
    assert first.lower == second.lower == third.lower == ws.checkouts_dir(mirror) / commit / "tree"
    assert os.path.ismount(first.tree) and os.path.ismount(second.tree)
    assert [p.name for p in ws.checkouts_dir(mirror).iterdir() if p.is_dir()] == [commit]
    # The same file underneath: nothing was copied for the second build.
    assert (first.tree / "README.md").stat().st_ino == (second.tree / "README.md").stat().st_ino

    (first.tree / "README.md").write_text("# Changed by the first build\n")
    (first.tree / "only-first.txt").write_text("1\n")
    (second.tree / "app" / "util" / "text.py").unlink()

    assert (second.tree / "README.md").read_text() == "# App\n"
    assert not (second.tree / "only-first.txt").exists()
    assert (first.tree / "app" / "util" / "text.py").exists()
    assert (first.lower / "README.md").read_text() == "# App\n"
    assert (first.lower / "app" / "util" / "text.py").exists()
    assert "only-first.txt" in first.pending_diff() and "only-first.txt" not in second.pending_diff()


@needs_root
def test_two_builds_starting_at_once_make_the_shared_checkout_once(mirror, commit, place, workspaces):
    results: list[ws.Workspace | BaseException] = []

    barrier = threading.Barrier(4)

    def start(name):
        try:
            barrier.wait()
            results.append(ws.prepare_workspace(mirror, commit, place / name))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            results.append(exc)

    threads = [threading.Thread(target=start, args=(f"b{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    workspaces.extend(r for r in results if isinstance(r, ws.Workspace))
    assert all(isinstance(r, ws.Workspace) and r.overlay for r in results), results
    assert {r.lower for r in results} == {ws.checkouts_dir(mirror) / commit / "tree"}
    assert all((r.tree / "app" / "main.py").read_text() == FILES["app/main.py"] for r in results)


@needs_root
def test_a_build_using_a_shared_checkout_never_holds_up_another(mirror, commit, place, workspaces):
    # The lease is a lock on the checkout itself; the lock taken to make a checkout stays free.
    prepare(workspaces, mirror, commit, place / "b1")
    fd = os.open(ws.checkouts_dir(mirror) / f"{commit}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


@needs_root
def test_git_does_not_rehash_the_shared_files(mirror, commit, place, workspaces):
    # The copied index records the shared checkout's inode, owner, size and times, which overlayfs shows
    # unchanged: `git add --all` finds nothing to refresh and leaves the index file as it was.
    workspace = prepare(workspaces, mirror, commit, place / "b1")
    before = (workspace.root / "index").read_bytes()
    workspace._add()
    assert (workspace.root / "index").read_bytes() == before


@needs_root
def test_the_shared_checkout_belongs_to_the_sandbox_user_so_giving_the_tree_copies_nothing(
    mirror, commit, place, workspaces
):
    workspace = prepare(workspaces, mirror, commit, place / "b1")
    owners = {(s.st_uid, s.st_gid) for s in (p.lstat() for p in [workspace.tree, *workspace.tree.rglob("*")])}
    assert owners == {ws.SANDBOX_OWNER}
    assert oct(workspace.tree.stat().st_mode & 0o777) == oct(workspace.lower.stat().st_mode & 0o777)
    # The shared checkout itself is reachable only by root: nothing but the overlay exposes it.
    assert ws.checkouts_dir(mirror).stat().st_mode & 0o077 == 0

    bwrap = pytest.importorskip("agents.sandbox.bwrap")
    bwrap.give_tree(workspace.tree, *ws.SANDBOX_OWNER)
    assert list(workspace.upper.iterdir()) == []


@needs_root
def test_close_unmounts_and_removes_the_build_layer(mirror, commit, place, workspaces):
    workspace = prepare(workspaces, mirror, commit, place / "b1")
    (workspace.tree / "scratch.txt").write_text("gone soon\n")

    workspace.close()
    workspace.close()

    assert not os.path.ismount(workspace.tree)
    assert list(workspace.tree.iterdir()) == []
    assert not os.path.ismount(workspace.layer) and not workspace.layer.exists()
    assert not (workspace.root / "layer.img").exists()
    assert (workspace.lower / "README.md").exists()


@needs_root
def test_close_workspace_by_path_unmounts_what_was_prepared_there(mirror, commit, place):
    workspace = ws.prepare_workspace(mirror, commit, place / "b1")
    ws.close_workspace(place / "b1")
    assert not os.path.ismount(workspace.tree)
    ws.close_workspace(place / "b1")  # nothing left: no error
    ws.close_workspace(place / "never-prepared")


@needs_root
def test_overlays_left_by_a_killed_worker_are_unmounted_and_live_ones_kept(mirror, commit, place, workspaces):
    live = prepare(workspaces, mirror, commit, place / "builds" / "live")
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from agents.workspace import prepare_workspace\n"
        f"prepare_workspace(Path({str(mirror)!r}), {commit!r}, Path({str(place / 'builds' / 'killed')!r}))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    worker = subprocess.run([sys.executable, "-c", script], cwd=Path(ws.__file__).parent.parent)
    assert worker.returncode == -signal.SIGKILL
    assert os.path.ismount(place / "builds" / "killed" / "tree")

    assert ws.close_stale_workspaces(place / "builds") == [(place / "builds" / "killed").resolve()]
    assert not os.path.ismount(place / "builds" / "killed" / "tree")
    assert os.path.ismount(live.tree)
    assert ws.close_stale_workspaces(place / "elsewhere") == []


@needs_root
def test_unused_shared_checkouts_are_pruned_but_not_those_in_use(origin, mirror, commit, place, workspaces):
    in_use = prepare(workspaces, mirror, commit, place / "b1")
    commit_in_origin(origin, {"second.txt": "2\n"})
    ws.sync_mirror(str(origin), mirror)
    second = ws.resolve(mirror, "main")
    ws.prepare_workspace(mirror, second, place / "b2").close()
    commit_in_origin(origin, {"third.txt": "3\n"})
    ws.sync_mirror(str(origin), mirror)
    third = ws.resolve(mirror, "main")

    prepare(workspaces, mirror, third, place / "b3", keep_checkouts=1)

    kept = sorted(p.name for p in ws.checkouts_dir(mirror).iterdir() if p.is_dir())
    assert kept == sorted([commit, third])  # the oldest is in use, the second was not
    assert (in_use.tree / "README.md").read_text() == "# App\n"


def test_the_full_checkout_can_be_forced(mirror, commit, place, workspaces):
    workspace = prepare(workspaces, mirror, commit, place / "b1", overlay=False)
    assert not workspace.overlay
    assert not os.path.ismount(workspace.tree)
    assert not ws.checkouts_dir(mirror).exists()
    assert (workspace.tree / "app" / "util" / "text.py").read_text() == FILES["app/util/text.py"]
    workspace.close()
    assert not workspace.tree.exists()


@needs_root
def test_a_failed_mount_falls_back_to_a_full_checkout_with_one_log_line(
    mirror, commit, place, workspaces, monkeypatch, caplog
):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(ws, "_mount_overlay", refuse)
    with caplog.at_level(logging.WARNING, logger="agents.workspace"):
        workspace = prepare(workspaces, mirror, commit, place / "b1")

    assert not workspace.overlay
    assert (workspace.tree / "README.md").read_text() == "# App\n"
    assert not (workspace.root / "layer").exists() and not (workspace.root / "layer.img").exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"Overlay workspaces are not available (the overlay could not be set up: [Errno 1] Operation not "
        f"permitted): checking {commit[:12]} out in full."
    ]


def test_insisting_on_an_overlay_where_none_is_possible_is_an_error(mirror, commit, place, caplog):
    # Mount options are comma-separated, so such paths cannot be mounted.
    with pytest.raises(ServiceError, match="overlay workspace is not possible"):
        ws.prepare_workspace(mirror, commit, place / "a,b", overlay=True)
    with caplog.at_level(logging.WARNING, logger="agents.workspace"):
        workspace = ws.prepare_workspace(mirror, commit, place / "c,d")
    workspace.close()
    assert not workspace.overlay
    assert len(caplog.records) == 1


# --- host git never runs what the tree plants ------------------------------------------------------


@pytest.mark.parametrize("overlay", [pytest.param(None, marks=needs_root), False], ids=["overlay", "full"])
def test_host_git_never_runs_hooks_filters_or_fsmonitor_from_the_tree(mirror, commit, place, workspaces, overlay):
    marker = place / "pwned"
    workspace = prepare(workspaces, mirror, commit, place / "b1", overlay=overlay)
    tree = workspace.tree
    script = f"#!/bin/sh\ntouch {marker}\ncat\n"
    hooks = tree / ".git" / "hooks"
    hooks.mkdir(parents=True)
    for hook in ("pre-commit", "post-commit", "post-index-change", "reference-transaction", "fsmonitor-watchman"):
        (hooks / hook).write_text(script)
        (hooks / hook).chmod(0o755)
    (tree / "evil.sh").write_text(script)
    (tree / "evil.sh").chmod(0o755)
    config = (
        f"[core]\n\tfsmonitor = {tree}/evil.sh\n\thooksPath = {hooks}\n"
        f'[filter "evil"]\n\tclean = {tree}/evil.sh\n\tsmudge = {tree}/evil.sh\n\trequired = true\n'
        f'[diff "evil"]\n\ttextconv = {tree}/evil.sh\n\tcommand = {tree}/evil.sh\n'
    )
    (tree / ".git" / "config").write_text(config)
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tree / ".gitconfig").write_text(config)
    (tree / ".gitattributes").write_text("* filter=evil diff=evil\n")
    (tree / "app" / "main.py").write_text("print('changed')\n")

    assert workspace.changed()
    assert "print('changed')" in workspace.pending_diff()
    result = workspace.commit("Change", "refs/prototypes/safe/1")
    workspace.diff(result)
    workspace.diffstat(result)

    assert not marker.exists()
    assert not any(path.startswith(".git/") for path in ws.list_files(mirror, result))
    # No clean filter ran: the file is committed exactly as written.
    assert ws.read_file(mirror, result, "app/main.py") == "print('changed')\n"
