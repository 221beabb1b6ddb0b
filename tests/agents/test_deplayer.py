"""Dependencies, once: setup runs once per (target, lock files and recipe), and later builds mount what it
installed as a read-only layer. Real git, real overlays, the real bubblewrap sandbox, the replay provider."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from agents import BuildSpec, build, deplayer
from agents import workspace as git
from agents.providers import ProviderConfig
from agents.recipe import parse_recipe
from agents.sandbox import load_backend
from agents.tools import EDITOR

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="overlay workspaces (and their dependency layers) need root")

# A setup that "installs" the lock file's packages: what it writes depends on the lock file, so a test
# can tell whether the dependencies in the tree are those of the lock file the tests see.
RECIPE = """\
[prototype]
name = "Locked"
kind = "backend"

[setup]
commands = ["mkdir -p node_modules && cp package-lock.json node_modules/installed.json && echo 'module.exports = 42' > node_modules/x.js"]

[test]
command = "python3 -m unittest discover -v -s tests"
timeout = 60

[artifact]
kind = "archive"
path = "dist/app.tar"

[build]
command = "mkdir -p dist && tar -cf dist/app.tar calc.py"
"""
FILES = {
    "prototype.toml": RECIPE,
    ".gitignore": "node_modules/\ndist/\n",
    "package-lock.json": '{"packages": {"left-pad": "1.0.0"}}\n',
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": (
        "import json\nimport unittest\n\nfrom calc import add\n\n\n"
        "class CalcTest(unittest.TestCase):\n"
        "    def test_adds(self):\n        self.assertEqual(add(2, 2), 4)\n\n"
        "    def test_the_lock_files_packages_are_installed(self):\n"
        "        with open('node_modules/installed.json') as installed, open('package-lock.json') as lock:\n"
        "            self.assertEqual(json.load(installed), json.load(lock))\n"
    ),
}
_ids = itertools.count(1)


def reply(*content) -> dict:
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {"id": f"msg_dep{next(_ids)}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": list(content), "stop_reason": "tool_use", "stop_sequence": None, "usage": usage}  # fmt: skip


def use(name: str, **tool_input) -> dict:
    return {"type": "tool_use", "id": f"toolu_dep{next(_ids)}", "name": name, "input": tool_input}


FIX = [
    reply(use(EDITOR, command="str_replace", path="calc.py", old_str="a - b", new_str="a + b")),
    reply(use("verify")),
    reply(use("finish", summary="Adding now adds.")),
]


class Sink:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def emit(self, kind, data):
        self.events.append((kind, data))

    def stage(self, name):
        self.events.append(("stage", {"name": name}))

    def cancelled(self):
        return False

    def logs(self) -> list[str]:
        return [data["text"] for kind, data in self.events if kind == "log"]

    def setup_runs(self) -> int:
        return sum(1 for kind, data in self.events if kind == "command" and data["command"].startswith("mkdir"))


def git_in(repo: Path, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(make_repo, scratch_dir):
    repo = make_repo(FILES)
    return repo, scratch_dir("deps-")


def run_build(repo: Path, work: Path, name: str, responses=FIX, **fields):
    cassette = work / f"{name}.json"
    cassette.write_text(json.dumps({"format": 1, "target": "locked", "idea": "Fix adding", "responses": responses}))
    sink = Sink()
    spec = BuildSpec(
        target="locked", repo_url=str(repo), base_ref="main", idea="Fix adding", mirror=work / "mirror.git",
        work_dir=work / f"work-{name}", output_dir=work / f"out-{name}", result_ref=f"refs/prototypes/p/{name}",
        provider=ProviderConfig(name="replay", cassette=cassette), **fields,
    )  # fmt: skip
    return build(spec, sink), sink


def layers(work: Path) -> list[Path]:
    store = deplayer.layers_dir(work / "mirror.git")
    return sorted(p for p in store.iterdir() if deplayer.LAYER_NAME.fullmatch(p.name)) if store.is_dir() else []


# --- the key ------------------------------------------------------------------------------------------


def test_the_key_follows_the_lock_files_the_setup_and_the_toolchain_but_not_installed_packages(make_repo, scratch_dir):
    repo = make_repo({**FILES, "node_modules/dep/package-lock.json": "{}", "web/yarn.lock": "a\n"})
    mirror = scratch_dir("keys-") / "mirror.git"
    git.sync_mirror(str(repo), mirror)
    commit = git.resolve(mirror, "main")
    recipe = parse_recipe(RECIPE)

    files = deplayer.lock_inputs(mirror, commit, recipe.lock_inputs)

    assert [path for path, _ in files] == ["package-lock.json", "web/yarn.lock"]
    key = deplayer.layer_key(recipe, files)
    assert deplayer.layer_key(recipe, files) == key
    assert (
        deplayer.layer_key(parse_recipe(RECIPE.replace("[build]", '[toolchain]\nnode = "22"\n\n[build]')), files) != key
    )
    assert deplayer.layer_key(parse_recipe(RECIPE.replace("mkdir -p", "mkdir -pv")), files) != key
    assert deplayer.layer_key(recipe, files, scope="refs/prototypes/p") != key
    timeout = RECIPE.replace("[setup]\n", "[setup]\ntimeout = 900\n")
    assert deplayer.layer_key(parse_recipe(timeout), files) == key  # how long setup may take changes nothing
    (repo / "web" / "yarn.lock").write_text("b\n")
    git_in(repo, "commit", "-qam", "New lock")
    git.sync_mirror(str(repo), mirror)
    changed = deplayer.lock_inputs(mirror, git.resolve(mirror, "main"), recipe.lock_inputs)
    assert deplayer.layer_key(recipe, changed) != key
    only = parse_recipe(RECIPE.replace("[setup]\n", '[setup]\ninputs = ["web/yarn.lock"]\n'))
    assert [path for path, _ in deplayer.lock_inputs(mirror, commit, only.lock_inputs)] == ["web/yarn.lock"]


def test_a_recipe_without_setup_has_no_layer(make_repo, scratch_dir):
    text = re.sub(r"\[setup\]\ncommands = .*\n", "", RECIPE)
    recipe = parse_recipe(text)
    assert not recipe.setup
    repo = make_repo({**FILES, "prototype.toml": text})
    mirror = scratch_dir("nosetup-") / "mirror.git"
    git.sync_mirror(str(repo), mirror)
    assert deplayer.find_layer(mirror, git.resolve(mirror, "main"), recipe) is None


# --- builds -------------------------------------------------------------------------------------------


@needs_root
def test_a_second_build_of_the_same_commit_runs_no_setup_and_its_tests_pass_on_the_layer(project):
    repo, work = project

    first, first_sink = run_build(repo, work, "1")
    second, second_sink = run_build(repo, work, "2")

    assert first.ok, first.error
    assert first_sink.setup_runs() == 1
    assert any(line.startswith("Dependencies kept for later builds of package-lock.json") for line in first_sink.logs())
    assert second.ok, second.error
    assert second_sink.setup_runs() == 0
    [hit] = [line for line in second_sink.logs() if line.startswith("Dependencies from the layer made on ")]
    assert hit.endswith(" for package-lock.json (setup skipped).")
    assert second.verify["passed"] is True  # the tests read node_modules/installed.json from the layer
    [layer] = layers(work)
    assert (layer / "tree" / "node_modules" / "x.js").read_text() == "module.exports = 42\n"
    assert json.loads((layer / "layer.json").read_text())["inputs"] == ["package-lock.json"]
    # The installed packages stay out of the result, as .gitignore says.
    assert "node_modules" not in git.git(
        "ls-tree", "-r", "--name-only", second.result_commit, git_dir=work / "mirror.git"
    )


@needs_root
def test_a_build_whose_start_commit_changed_the_lock_file_sets_up_again_and_stores_a_second_layer(project):
    repo, work = project
    first, _ = run_build(repo, work, "1")
    (repo / "package-lock.json").write_text('{"packages": {"left-pad": "1.3.0"}}\n')
    git_in(repo, "commit", "-qam", "Newer left-pad")

    second, sink = run_build(repo, work, "2")

    assert first.ok and second.ok, (first.error, second.error)
    assert sink.setup_runs() == 1
    assert not any(line.startswith("Dependencies from the layer") for line in sink.logs())
    installed = sorted(json.loads((layer / "tree/node_modules/installed.json").read_text())["packages"]["left-pad"]
                       for layer in layers(work))  # fmt: skip
    assert installed == ["1.0.0", "1.3.0"]


@needs_root
def test_a_follow_up_keeps_its_own_layer_apart_from_the_targets(project):
    repo, work = project
    changed_lock = [
        reply(use(EDITOR, command="str_replace", path="package-lock.json", old_str="1.0.0", new_str="2.0.0")),
        *FIX,
    ]
    first, _ = run_build(repo, work, "1", responses=changed_lock)
    assert first.ok, first.error

    note = [
        reply(use(EDITOR, command="create", path="NOTES.md", file_text="Adding adds.\n")),
        reply(use("verify")),
        reply(use("finish", summary="Noted.")),
    ]
    follow_up, sink = run_build(repo, work, "2", responses=note, start_commit=first.result_commit)
    from_main, main_sink = run_build(repo, work, "3")

    assert follow_up.ok, follow_up.error
    assert sink.setup_runs() == 1  # its lock file is the agent's: a new key
    assert len(layers(work)) == 2
    scoped = deplayer.find_layer(
        work / "mirror.git", first.result_commit, parse_recipe(RECIPE), scope="refs/prototypes/p"
    )
    files = deplayer.lock_inputs(work / "mirror.git", first.result_commit, parse_recipe(RECIPE).lock_inputs)
    try:
        assert scoped.hit is not None
        assert scoped.hit.name == deplayer.layer_key(parse_recipe(RECIPE), files, scope="refs/prototypes/p")
    finally:
        scoped.release()
    # A build of the target's own code never sees what the prototype's setup made.
    assert from_main.ok and main_sink.setup_runs() == 0
    unscoped = deplayer.find_layer(work / "mirror.git", first.result_commit, parse_recipe(RECIPE))
    assert unscoped.hit is None


@needs_root
def test_the_agent_editing_the_lock_file_gets_setup_again_before_verify_and_no_layer_from_it(project):
    repo, work = project
    first, _ = run_build(repo, work, "1")
    responses = [
        reply(use(EDITOR, command="str_replace", path="package-lock.json", old_str="1.0.0", new_str="2.0.0")),
        *FIX,
    ]

    second, sink = run_build(repo, work, "2", responses=responses)

    assert first.ok and second.ok, (first.error, second.error)
    assert sink.setup_runs() == 1  # not at the start (a hit), once before the verify
    [line] = [line for line in sink.logs() if line.startswith("The lock files changed")]
    assert line == (
        "The lock files changed (package-lock.json): running setup again before the tests, without network (none allowed)."
    )
    kinds = [kind for kind, _ in sink.events]
    assert kinds.index("command") < kinds.index("verify")
    assert second.verify["passed"] is True  # the tests saw the dependencies of the edited lock file
    [layer] = layers(work)  # nothing stored from the agent's change
    assert "1.0.0" in (layer / "tree/node_modules/installed.json").read_text()


@needs_root
def test_a_lock_file_touched_but_unchanged_needs_no_setup_again(project):
    repo, work = project
    first, _ = run_build(repo, work, "1")
    responses = [reply(use("run", command="touch package-lock.json && cp package-lock.json x && mv x package-lock.json")),
                 *FIX]  # fmt: skip

    second, sink = run_build(repo, work, "2", responses=responses)

    assert first.ok and second.ok, (first.error, second.error)
    assert sink.setup_runs() == 0
    assert not any(line.startswith("The lock files changed") for line in sink.logs())


def test_a_full_checkout_watches_its_lock_files_both_ways(mirror, scratch_dir):
    recipe = parse_recipe(RECIPE)
    commit = git.resolve(mirror, "main")
    with git.prepare_workspace(mirror, commit, scratch_dir("watch-") / "ws", overlay=False) as workspace:
        watch = deplayer.LockWatch(workspace, recipe, deplayer.lock_inputs(mirror, commit, recipe.lock_inputs))
        assert watch.changed() == []
        (workspace.tree / "web").mkdir()
        (workspace.tree / "web" / "yarn.lock").write_text("new\n")
        (workspace.tree / "package-lock.json").unlink()
        assert watch.changed() == ["package-lock.json", "web/yarn.lock"]
        watch.reset()
        assert watch.changed() == []


@needs_root
def test_a_failing_setup_stores_no_layer(project):
    repo, work = project
    git_in(repo, "rm", "-q", "package-lock.json")
    git_in(repo, "commit", "-qm", "No lock file")

    result, sink = run_build(repo, work, "1")

    assert result.error is not None and result.error.code == "setup_failed"
    assert layers(work) == []
    assert not any(p.name.startswith(".partial-") for p in deplayer.layers_dir(work / "mirror.git").glob("*"))


# --- the layer in a workspace -------------------------------------------------------------------------


@pytest.fixture
def mirror(make_repo, scratch_dir):
    repo = make_repo(FILES)
    mirror = scratch_dir("mirror-") / "mirror.git"
    git.sync_mirror(str(repo), mirror)
    return mirror


def _installed_workspace(mirror: Path, root: Path, **kw) -> git.Workspace:
    """A workspace where 'setup' ran: node_modules written by the sandbox's user."""
    workspace = git.prepare_workspace(mirror, git.resolve(mirror, "main"), root, **kw)
    sandbox = load_backend("bwrap")(workspace.tree, owned=workspace.lower is not None)
    outcome = sandbox.run(["bash", "-c", "mkdir -p node_modules && echo 'module.exports = 42' > node_modules/x.js"])
    assert outcome.exit_code == 0, outcome.output
    return workspace


@needs_root
def test_the_layer_is_read_only_from_the_sandbox(mirror, scratch_dir):
    place = scratch_dir("ro-")
    recipe = parse_recipe(RECIPE)
    commit = git.resolve(mirror, "main")
    with _installed_workspace(mirror, place / "a") as first:
        assert deplayer.store_layer(deplayer.find_layer(mirror, commit, recipe), first)
    deps = deplayer.find_layer(mirror, commit, recipe)
    assert deps.hit is not None
    stored = deps.tree / "node_modules" / "x.js"

    with git.prepare_workspace(mirror, commit, place / "b", deps=deps.tree, deps_lease=deps.take_lease()) as ws:
        sandbox = load_backend("bwrap")(ws.tree, owned=True)
        outcome = sandbox.run(["bash", "-c", "cat node_modules/x.js && echo changed > node_modules/x.js && "
                                             "echo new > node_modules/new.js"])  # fmt: skip
        assert outcome.exit_code == 0, outcome.output
        assert outcome.output.startswith("module.exports = 42")
        assert (ws.tree / "node_modules" / "x.js").read_text() == "changed\n"
        assert (ws.upper / "node_modules" / "x.js").read_text() == "changed\n"  # the build's own copy

    assert stored.read_text() == "module.exports = 42\n"
    assert not (stored.parent / "new.js").exists()


@needs_root
def test_files_setup_changed_or_deleted_in_the_repository_stay_so_in_later_builds(mirror, scratch_dir):
    place = scratch_dir("changed-")
    recipe = parse_recipe(RECIPE)
    commit = git.resolve(mirror, "main")
    with git.prepare_workspace(mirror, commit, place / "a") as first:
        sandbox = load_backend("bwrap")(first.tree, owned=True)
        outcome = sandbox.run(["bash", "-c", "echo '# generated' >> calc.py && rm .gitignore && rm -r tests"])
        assert outcome.exit_code == 0, outcome.output
        assert deplayer.store_layer(deplayer.find_layer(mirror, commit, recipe), first)
    deps = deplayer.find_layer(mirror, commit, recipe)

    with git.prepare_workspace(mirror, commit, place / "b", deps=deps.tree, deps_lease=deps.take_lease()) as second:
        assert (second.tree / "calc.py").read_text().endswith("# generated\n")
        assert not (second.tree / ".gitignore").exists() and not (second.tree / "tests").exists()
        assert sorted(p.name for p in second.tree.iterdir()) == ["calc.py", "package-lock.json", "prototype.toml"]
        assert sorted(second._git("diff", "--name-status", commit).split()) == sorted(
            ["M", "calc.py", "D", ".gitignore", "D", "tests/test_calc.py"]
        )


@needs_root
def test_a_layer_is_leased_while_mounted_and_pruning_skips_it(mirror, scratch_dir):
    place = scratch_dir("prune-")
    store = deplayer.layers_dir(mirror)
    store.mkdir(mode=0o700, exist_ok=True)
    for n in range(3):  # older layers, unused
        entry = store / f"{n:064x}"
        (entry / "tree").mkdir(parents=True)
        (entry / "layer.json").write_text('{"made": "long ago"}')
        os.utime(entry, (1000 + n, 1000 + n))
    recipe = parse_recipe(RECIPE)
    commit = git.resolve(mirror, "main")
    with _installed_workspace(mirror, place / "a") as first:
        deps = deplayer.find_layer(mirror, commit, recipe)
        assert deplayer.store_layer(deps, first, keep=10)
    used = deplayer.find_layer(mirror, commit, recipe)
    os.utime(used.hit, (1, 1))  # the least recently used of all, yet in use
    workspace = git.prepare_workspace(mirror, commit, place / "b", deps=used.tree, deps_lease=used.take_lease())
    (store / ".partial-crashed").mkdir()
    os.utime(store / ".partial-crashed", (1, 1))
    (store / ".partial-copying").mkdir()  # another build's copy in progress
    try:
        removed = deplayer.prune_layers(store, keep=0)
        assert sorted(removed) == [f"{n:064x}" for n in range(3)]
        assert not (store / ".partial-crashed").exists() and (store / ".partial-copying").is_dir()
        assert used.hit.is_dir() and (workspace.tree / "node_modules" / "x.js").exists()
    finally:
        workspace.close()
    assert deplayer.prune_layers(store, keep=0) == [used.key]


@needs_root
def test_racing_stores_of_one_key_leave_one_good_layer(mirror, scratch_dir):
    place = scratch_dir("race-")
    recipe = parse_recipe(RECIPE)
    commit = git.resolve(mirror, "main")
    workspaces = [_installed_workspace(mirror, place / name) for name in ("a", "b", "c")]
    plans = [deplayer.find_layer(mirror, commit, recipe) for _ in workspaces]
    start = threading.Barrier(len(workspaces))
    outcomes: list[bool] = []

    def store(plan, workspace):
        start.wait()
        outcomes.append(deplayer.store_layer(plan, workspace))

    threads = [threading.Thread(target=store, args=pair) for pair in zip(plans, workspaces, strict=True)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for workspace in workspaces:
            workspace.close()

    assert sorted(outcomes) == [False, False, True]
    store_dir = deplayer.layers_dir(mirror)
    assert [p.name for p in store_dir.iterdir()] == [plans[0].key]
    assert (store_dir / plans[0].key / "tree/node_modules/x.js").read_text() == "module.exports = 42\n"


# --- full checkouts (no overlay) ------------------------------------------------------------------------


def test_a_full_checkout_keeps_and_reuses_the_layer_by_copying(mirror, scratch_dir):
    place = scratch_dir("full-")
    recipe = parse_recipe(RECIPE)
    commit = git.resolve(mirror, "main")
    with git.prepare_workspace(mirror, commit, place / "a", overlay=False) as first:
        (first.tree / "node_modules" / "pkg").mkdir(parents=True)
        (first.tree / "node_modules" / "pkg" / "index.js").write_text("ok\n")
        (first.tree / "calc.py").write_text("# patched by setup\n")
        assert deplayer.store_layer(deplayer.find_layer(mirror, commit, recipe), first)
    deps = deplayer.find_layer(mirror, commit, recipe)
    assert deps.hit is not None
    assert sorted(str(p.relative_to(deps.tree)) for p in deps.tree.rglob("*")) == [
        "calc.py", "node_modules", "node_modules/pkg", "node_modules/pkg/index.js",
    ]  # fmt: skip

    with git.prepare_workspace(mirror, commit, place / "b", overlay=False, deps=deps.tree,
                               deps_lease=deps.take_lease()) as second:  # fmt: skip
        assert (second.tree / "node_modules/pkg/index.js").read_text() == "ok\n"
        assert (second.tree / "calc.py").read_text() == "# patched by setup\n"
        assert (second.tree / "tests/test_calc.py").exists()


def test_without_overlays_a_second_build_copies_the_layer_in_and_runs_no_setup(project, monkeypatch):
    repo, work = project
    monkeypatch.setattr(git, "_overlay_unavailable", lambda *args: "overlays are switched off for this test")

    first, first_sink = run_build(repo, work, "1")
    second, second_sink = run_build(repo, work, "2")

    assert first.ok and second.ok, (first.error, second.error)
    assert (first_sink.setup_runs(), second_sink.setup_runs()) == (1, 0)
    [layer] = layers(work)
    kept = sorted(str(p.relative_to(layer / "tree")) for p in (layer / "tree").rglob("*"))
    assert kept == ["node_modules", "node_modules/installed.json", "node_modules/x.js"]
    assert second.verify["passed"] is True


def test_copying_a_layer_into_a_checkout_never_follows_its_links(scratch_dir):
    place = scratch_dir("links-")
    outside = place / "outside"
    outside.mkdir()
    tree, layer = place / "tree", place / "layer"
    tree.mkdir()
    (tree / "node_modules").symlink_to(outside)  # the repository's own content: hostile
    (tree / "README.md").symlink_to(outside / "readme")
    (layer / "node_modules").mkdir(parents=True)
    (layer / "node_modules" / "x.js").write_text("x\n")
    (layer / "README.md").write_text("from the layer\n")

    git.copy_layer(layer, tree)

    assert list(outside.iterdir()) == []
    assert not (tree / "node_modules").is_symlink()
    assert (tree / "node_modules" / "x.js").read_text() == "x\n"
    assert not (tree / "README.md").is_symlink() and (tree / "README.md").read_text() == "from the layer\n"


def test_copies_of_layer_files_are_never_setuid(scratch_dir):
    place = scratch_dir("suid-")
    tree, layer = place / "tree", place / "layer"
    tree.mkdir()
    (layer / "bin").mkdir(parents=True)
    (layer / "bin" / "tool").write_text("#!/bin/sh\n")
    (layer / "bin" / "tool").chmod(0o6755)

    git.copy_layer(layer, tree)

    assert (tree / "bin" / "tool").stat().st_mode & 0o7777 == 0o755
    assert (tree / "bin" / "tool").read_text() == "#!/bin/sh\n"


@needs_root
def test_copying_a_layer_applies_its_whiteouts(scratch_dir):
    place = scratch_dir("whiteouts-")
    tree, layer = place / "tree", place / "layer"
    (tree / "old").mkdir(parents=True)
    (tree / "old" / "stale.js").write_text("stale\n")
    (tree / "gone.txt").write_text("bye\n")
    layer.mkdir()
    os.mknod(layer / "gone.txt", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout: deleted by setup
    (layer / "old").mkdir()
    os.setxattr(layer / "old", "trusted.overlay.opaque", b"y")  # replaced whole by setup
    (layer / "old" / "fresh.js").write_text("fresh\n")

    git.copy_layer(layer, tree)

    assert not (tree / "gone.txt").exists()
    assert sorted(p.name for p in (tree / "old").iterdir()) == ["fresh.js"]
