"""Escapes through the host: what a hostile build leaves in its workspace for host-side code to trip on.

The sandbox held; these attack what the worker does with the tree afterwards (git, packaging, cleanup),
the disk behind it and the egress proxy in front of it. Files are planted from inside the real bwrap
sandbox, as a build would. `make test` runs this file as root (overlay workspaces on a quota-sized
nosuid, nodev layer) and, through test_escapes.py's last test, as an unprivileged worker (full
checkouts, quota measured between steps). No traffic leaves loopback: the proxy's connections are
replaced by a recorder wherever an address beyond loopback is involved.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agents import BuildSpec, build
from agents import workspace as ws
from agents.egress import EgressProxy
from agents.errors import UserError
from agents.packaging import package
from agents.providers import ProviderConfig
from agents.recipe import parse_recipe
from agents.sandbox import SandboxLimits
from agents.sandbox.bwrap import BwrapSandbox

AS_ROOT = os.geteuid() == 0
UNPRIVILEGED = 65533
MiB = 1024 * 1024
LIMITS = SandboxLimits(memory_bytes=512 * MiB, pids=64, file_size_bytes=16 * MiB, output_bytes=64 * 1024)
GIT_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
       for what, value in (("NAME", "Test"), ("EMAIL", "test@example.invalid"))},
}  # fmt: skip
RECIPE = """\
[prototype]
name = "Hostile"
kind = "backend"

[build]
command = '''{build}'''
timeout = 60

[test]
command = "true"
timeout = 30

[artifact]
kind = "archive"
path = "dist/out.tar"
"""


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def scratch():
    # Not pytest's tmp_path: when the worker is root the sandbox's user must reach the workspace.
    path = Path(tempfile.mkdtemp(prefix="host-side-"))
    path.chmod(0o711)
    yield path
    ws.close_stale_workspaces(path)
    ws.remove_tree(path)


def make_repo(where: Path, files: dict[str, str]) -> Path:
    where.mkdir(parents=True)
    for name, text in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    for argv in (["init", "-q", "-b", "main"], ["add", "--all"], ["commit", "-q", "-m", "The app"]):
        subprocess.run(["git", *argv], cwd=where, env=GIT_ENV, check=True, capture_output=True)
    return where


def head_of(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, env=GIT_ENV, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


@pytest.fixture
def workspace(scratch):
    origin = make_repo(scratch / "origin", {"README.md": "# App\n", "app/main.py": "print('hi')\n"})
    mirror = scratch / "mirror.git"
    ws.sync_mirror(str(origin), mirror)
    workspace = ws.prepare_workspace(mirror, ws.resolve(mirror, "main"), scratch / "ws", quota=256 * MiB)
    yield workspace
    workspace.close()


@pytest.fixture
def sandbox(workspace):
    return BwrapSandbox(workspace.tree, limits=LIMITS, owned=workspace.overlay)


def sh(sandbox, script: str, timeout: float = 60):
    result = sandbox.run(["bash", "-c", script], timeout=timeout)
    return result


def committed(workspace: ws.Workspace, commit: str) -> dict[str, str]:
    """path -> mode of every entry of a commit."""
    out = ws.git("ls-tree", "-r", "-z", commit, git_dir=workspace.mirror)
    return {rec.split("\t", 1)[1]: rec.split(" ", 1)[0] for rec in out.split("\0") if rec}


def in_thread(function, seconds: float):
    """Run `function` in a thread: (finished, its result or exception). A hang fails the test instead of
    hanging the suite."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), outcome


# --- 10: host git never follows pointers out of the workspace ----------------------------------------
def test_gitdir_files_and_nested_repositories_in_the_tree_are_never_followed_by_host_git(scratch, workspace, sandbox):
    secret = make_repo(scratch / "secret", {"plans.txt": "unreleased\n"})
    secret_head = head_of(secret)
    script = f"""
set -e
printf 'gitdir: {secret}/.git\\n' > .git
mkdir -p vendor/lib && printf 'gitdir: {secret}/.git\\n' > vendor/lib/.git && echo code > vendor/lib/code.js
mkdir -p linked && ln -s {secret}/.git linked/.git && echo more > linked/more.txt
mkdir -p nested && cd nested && git init -q && echo x > x && git -c user.name=a -c user.email=a@b add x
git -c user.name=a -c user.email=a@b commit -qm x
mkdir -p .git/objects/info && echo {secret}/.git/objects > .git/objects/info/alternates
cd /workspace
for name in .GIT .Git. 'git~1' '.git::$INDEX_ALLOCATION'; do mkdir -p "odd/$name" && echo x > "odd/$name/config"; done
ln -s {secret}/.git/config odd/.gitmodules && echo kept > odd/kept.txt
"""
    result = sh(sandbox, script)
    assert result.exit_code == 0, result.output

    commit = workspace.commit("hostile", "refs/prototypes/test/1")

    entries = committed(workspace, commit)
    assert "160000" not in entries.values(), entries  # no gitlink: nothing recorded another repository
    assert entries["vendor/lib/code.js"] == "100644" and entries["linked/more.txt"] == "100644"
    assert entries["nested/x"] == "100644"
    assert not any(part.lower().startswith((".git", "git~")) for path in entries for part in path.split("/")), entries
    assert entries["odd/kept.txt"] == "100644"
    assert secret_head not in workspace.diff(commit)
    assert not (workspace.tree / "vendor" / "lib" / ".git").exists()  # taken out before git looked
    assert head_of(secret) == secret_head


# --- 11: bounded by time, survives hostile trees, cleans up ------------------------------------------
def test_a_fifo_named_gitignore_does_not_hang_host_git(workspace, sandbox):
    result = sh(sandbox, "mkfifo .gitignore app/.gitignore app/.gitattributes && echo new > app/new.py")
    assert result.exit_code == 0, result.output

    finished, outcome = in_thread(lambda: workspace.commit("fifo", "refs/prototypes/test/1"), 60)

    assert finished, "host git hung on a FIFO in the tree"
    assert "error" not in outcome, outcome.get("error")
    entries = committed(workspace, outcome["value"])
    assert "app/new.py" in entries and ".gitignore" not in entries and "app/.gitignore" not in entries


def test_a_tree_nested_1500_deep_fails_in_plain_words_and_is_cleaned_up(workspace, sandbox):
    script = "import os\nos.chdir('/workspace')\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\n"
    result = sandbox.run(["python3", "-c", script], timeout=60)
    assert result.exit_code == 0, result.output

    with pytest.raises(UserError) as refused:
        workspace.commit("deep", "refs/prototypes/test/1")
    workspace.close()

    assert refused.value.code == "unsafe_files"
    assert f"nested more than {ws.MAX_DEPTH} deep" in refused.value.detail
    assert not (workspace.tree / "d").exists()
    assert not workspace.root.joinpath("layer").exists() and not workspace.root.joinpath("upper").exists()


def test_removing_a_tree_deeper_than_python_can_recurse_works(scratch):
    top = scratch / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(3000):  # deeper than PATH_MAX allows as one path
        os.mkdir("dd", dir_fd=fd)
        child = os.open("dd", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)

    ws.remove_tree(top)

    assert not top.exists()


def test_removing_a_tree_never_follows_its_links(scratch):
    outside = scratch / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the build's\n")
    tree = scratch / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "link").symlink_to(outside)
    (tree / "file-link").symlink_to(outside / "keep.txt")

    ws.remove_tree(tree)

    assert not tree.exists() and (outside / "keep.txt").read_text() == "not the build's\n"


def test_host_git_stops_at_the_builds_deadline(workspace):
    workspace.deadline = time.monotonic() - 1

    with pytest.raises(UserError) as late:
        workspace.commit("late", "refs/prototypes/test/1")

    assert late.value.code == "timed_out"


# --- 12: a disk quota per build, diffs and packages streamed, big files kept out of the mirror ---------
def test_a_build_cannot_write_more_than_its_quota(workspace, sandbox):
    # 16 MiB files (the per-file limit) until 512 MiB, twice the workspace's 256 MiB quota, a little
    # slower than a disk (so that the measuring guard of full checkouts, once a second, sees it happen).
    script = "for i in $(seq 32); do head -c 16M /dev/zero > big$i || exit 7; sleep 0.2; done; echo wrote all"
    result = sandbox.run(["bash", "-c", script], timeout=120, cancel=workspace.over_quota)

    with pytest.raises(UserError) as full:
        workspace.check_quota()

    assert full.value.code == "disk_quota"
    assert full.value.detail.startswith("the prototype wrote more than 268 MB")
    assert "wrote all" not in result.output, "the command wrote twice its quota"
    if workspace.layer is not None:  # the layer filesystem refuses the writes
        assert result.exit_code == 7 and "No space left on device" in result.output, result.output
        usage = subprocess.run(["du", "-sb", str(workspace.upper)], capture_output=True, text=True).stdout
        assert int(usage.split()[0]) <= 256 * MiB
    else:  # a full checkout is measured while the command runs, and the command stopped
        assert result.killed_reason == "cancelled", result


def test_the_diff_is_streamed_to_a_file_and_only_its_head_is_kept_in_memory(scratch, workspace):
    workspace.max_file_bytes = 64 * MiB
    with open(workspace.tree / "data.txt", "w") as handle:
        for n in range(700_000):
            handle.write(f"line {n} of a generated file that the prototype wrote\n")
    commit = workspace.commit("big", "refs/prototypes/test/1")

    tracemalloc.start()
    try:
        head = workspace.diff(commit, to=scratch / "out" / "change.patch")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (scratch / "out" / "change.patch").stat().st_size > 30 * MiB
    assert len(head.encode()) < ws.DIFF_KEPT + 1000 and "[… the diff goes on:" in head
    assert peak < 3 * ws.DIFF_KEPT + 4 * MiB, f"the diff took {peak / MiB:.0f} MiB of the worker's memory"


def test_files_over_the_size_limit_are_not_committed_to_the_mirror(workspace, sandbox):
    workspace.max_file_bytes = 1 * MiB
    result = sh(sandbox, "head -c 2M /dev/urandom > model.bin; head -c 3M /dev/zero > app/main.py; echo ok > small")
    assert result.exit_code == 0, result.output

    commit = workspace.commit("big files", "refs/prototypes/test/1")

    entries = committed(workspace, commit)
    assert "model.bin" not in entries and "small" in entries
    assert ws.git("show", f"{commit}:app/main.py", git_dir=workspace.mirror) == "print('hi')\n"  # as before
    assert workspace.left_out == ("app/main.py", "model.bin")


def test_a_web_bundle_is_packaged_without_reading_files_whole(scratch):
    tree = scratch / "tree"
    (tree / "dist").mkdir(parents=True)
    (tree / "dist" / "index.html").write_text("<h1>hi</h1>")
    with open(tree / "dist" / "video.bin", "wb") as handle:
        for _ in range(24):
            handle.write(os.urandom(MiB))
    recipe = parse_recipe(
        RECIPE.format(build="true")
        .replace('kind = "backend"', 'kind = "web"')
        .replace('kind = "archive"\npath = "dist/out.tar"', 'kind = "web"\npath = "dist"')
    )

    tracemalloc.start()
    try:
        artifact = package(tree, recipe, scratch / "out", "app")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert artifact.size > 24 * MiB
    assert peak < 8 * MiB, f"packaging took {peak / MiB:.0f} MiB of the worker's memory"


# --- 13: nothing the sandbox writes is setuid or a device on the host --------------------------------
def test_what_the_sandbox_writes_lands_on_a_nosuid_nodev_filesystem(workspace, sandbox):
    if workspace.layer is None:
        pytest.skip("full checkout (unprivileged worker): the sandbox's files belong to the worker's own user")
    result = sh(sandbox, "cp /usr/bin/id ./id && chmod 4755 ./id && ls -l ./id; mknod ./null c 1 3; echo done")
    assert "rwsr-xr-x" in result.output, result.output
    assert "done" in result.output and not (workspace.tree / "null").exists()

    on_host = workspace.upper / "id"
    assert on_host.stat().st_mode & 0o4000  # the bit is there...
    drop = [shutil.which("setpriv"), f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"]
    ran = subprocess.run([*drop, str(on_host), "-u"], capture_output=True, text=True, timeout=30)
    assert ran.stdout.strip() == str(UNPRIVILEGED), ran  # ...and gives nothing: the layer is nosuid

    options = mount_options(workspace.layer)
    assert {"nosuid", "nodev"} <= options, options
    assert {"nosuid", "nodev"} <= mount_options(workspace.tree)


def mount_options(point: Path) -> set[str]:
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split(" ")
            if fields[4] == str(point):
                return set(fields[5].split(","))
    raise AssertionError(f"{point} is not a mount point")


# --- 14: the egress proxy refuses rebinding ----------------------------------------------------------
class Web:
    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("answer", [["127.0.0.1"], ["10.0.0.7"], ["93.184.215.14", "127.0.0.1"], ["::ffff:7f00:1"]])
def test_an_allowed_name_rebound_to_a_local_or_private_address_is_refused_from_the_sandbox(
    workspace, monkeypatch, answer
):
    web = Web()
    tried = []

    def record(address, timeout=None):
        tried.append(address[0])
        raise ConnectionRefusedError(111, "no traffic beyond loopback in tests")

    monkeypatch.setattr("agents.egress.socket.create_connection", record)

    class Rebinding(BwrapSandbox):
        def make_proxy(self, owner=None):
            return EgressProxy(["allowed.test"], ports=(web.port,), owner=owner, resolve=lambda host: answer)

    sandbox = Rebinding(workspace.tree, limits=LIMITS, owned=workspace.overlay, egress_hosts=["allowed.test"])
    script = (
        "import urllib.request, urllib.error\n"
        "try:\n"
        f"    urllib.request.urlopen('http://allowed.test:{web.port}/', timeout=10)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('status', e.code)\n"
    )
    try:
        result = sandbox.run(["python3", "-c", script], network=True, timeout=60)
    finally:
        web.close()

    assert "status 403" in result.output, result.output
    assert "an address the sandbox may not reach" in result.output
    assert tried == [] and web.seen == []


# --- the whole engine: a hostile build fails in plain words and leaves nothing behind -----------------
def scripted_build(scratch: Path, build_command: str, **spec_fields):
    files = {"prototype.toml": RECIPE.format(build=build_command), "README.md": "# App\n"}
    origin = make_repo(scratch / "origin", files)
    edit = {"command": "str_replace", "path": "README.md", "old_str": "# App", "new_str": "# The app"}
    responses = [
        {"id": "msg_0", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
         "content": [{"type": "tool_use", "id": "toolu_0", "name": "str_replace_based_edit_tool", "input": edit}],
         "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}},
        {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
         "content": [{"type": "tool_use", "id": "toolu_1", "name": "verify", "input": {}}],
         "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}},
        {"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
         "content": [{"type": "tool_use", "id": "toolu_2", "name": "finish", "input": {"summary": "Done."}}],
         "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}},
    ]  # fmt: skip
    cassette = scratch / "cassette.json"
    cassette.write_text(json.dumps({"format": 1, "target": "hostile", "idea": "x", "responses": responses}))

    class Sink:
        def emit(self, kind, data):
            pass

        def stage(self, name):
            pass

        def cancelled(self):
            return False

    spec = BuildSpec(
        target="hostile", repo_url=str(origin), base_ref="main", idea="Make it hostile",
        mirror=scratch / "mirror.git", work_dir=scratch / "work", output_dir=scratch / "out",
        result_ref="refs/prototypes/hostile/1", provider=ProviderConfig(name="replay", cassette=cassette),
        **spec_fields,
    )  # fmt: skip
    return spec, build(spec, Sink())


def test_a_build_leaving_a_fifo_and_a_1500_deep_tree_fails_clearly_and_leaves_no_work_dir(scratch):
    command = (
        "mkdir -p dist && tar -cf dist/out.tar README.md && mkfifo .gitignore && "
        "python3 -c \"import os\nfor _ in range(1500):\n    os.mkdir('d'); os.chdir('d')\""
    )

    finished, outcome = in_thread(lambda: scripted_build(scratch, command), 240)

    assert finished, "the build hung"
    assert "error" not in outcome, outcome.get("error")  # build() itself never raises
    spec, result = outcome["value"]
    assert result.error is not None and result.error.code == "unsafe_files", result.error
    assert "nested more than" in result.error.detail
    assert "cannot save safely" in result.error.message
    assert not spec.work_dir.exists()
    assert not [m for m in ws._overlay_mounts() if str(scratch) in str(m)]


def test_a_build_that_fills_its_quota_fails_with_the_limit_in_plain_words(scratch):
    command = (
        "mkdir -p dist && tar -cf dist/out.tar README.md && for i in 1 2 3 4 5; do head -c 15M /dev/zero > f$i; done"
    )

    spec, result = scripted_build(scratch, command, disk_quota_bytes=48 * MiB)

    assert result.error is not None and result.error.code == "disk_quota", result.error
    assert result.error.detail.startswith("the prototype wrote more than 50.3 MB")
    assert "more to disk than a build may use" in result.error.message
    assert not spec.work_dir.exists()


def test_every_writable_mount_inside_the_sandbox_is_nosuid_and_nodev(sandbox):
    result = sandbox.run(["cat", "/proc/self/mountinfo"], timeout=30)
    assert result.exit_code == 0, result.output

    writable = {}
    for line in result.output.splitlines():
        fields = line.split(" ")
        options = set(fields[5].split(","))
        if "rw" in options:
            writable[fields[4]] = options
    # bwrap's --dev binds these few host devices (and a private devpts), which must stay usable; nothing else.
    devices = {point for point in writable if point.startswith("/dev/") and point != "/dev/shm"}
    assert devices <= {f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty", "pts")}, devices
    assert all("nosuid" in writable[point] for point in devices)
    rest = {point: options for point, options in writable.items() if point not in devices}
    assert {"/workspace", "/tmp", "/home/sandbox", "/dev/shm"} <= set(rest), rest
    assert all({"nosuid", "nodev"} <= options for options in rest.values()), rest
