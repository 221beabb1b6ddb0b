"""Build runners, the engine's half and the runner's own steps, without the store: a recipe step with
`runs_on` leaves the local sandbox as a job carrying a patch against the base commit; the runner's code
checks the base commit out of its own mirror, applies the patch, runs the command in its bubblewrap sandbox
and sends back the artifact, which the engine then packages. The store's queue and a runner process
against a live store: tests/test_runners.py.

The queue here (`LocalQueue`) is no stand-in: it runs each job with the runner's own `execute` on this
machine, as a runner process does between claiming a job and finishing it."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import agents
from agents.errors import ServiceError
from agents.providers import ProviderConfig
from agents.recipe import parse_recipe
from agents.runner import RemoteOutcome, check_out, execute, place_file, route_steps
from tests.agents.conftest import make_repo, scratch_dir

ROOT = Path(__file__).resolve().parents[2]
IOS_REPO = ROOT / "tests" / "runner_repos" / "pocket-notes-ios"
RECORDINGS = ROOT / "tests" / "recordings"


class LocalQueue:
    """Runs every job with the runner's own code (agents.runner.execute) on this machine."""

    def __init__(self):
        self.work = scratch_dir("runner-")
        self.jobs = []

    def run(self, job, *, timeout, cancel):
        self.jobs.append(job)
        folder = Path(tempfile.mkdtemp(dir=self.work))
        folder.chmod(0o711)
        as_sent = {"repo_url": job.repo_url, "base_commit": job.base_commit, "patch": job.patch,
                   "command": job.command, "timeout": timeout, "collect": list(job.collect)}  # fmt: skip
        result, files = execute(as_sent, work_root=self.work, folder=folder, sandbox="bwrap", cancel=cancel)
        return RemoteOutcome(result.exit_code, result.output, result.duration, result.killed_reason,
                             runner="this machine", files=files)  # fmt: skip


def ios_spec(tmp: Path, queue) -> agents.BuildSpec:
    repo = make_repo(source=IOS_REPO)
    return agents.BuildSpec(
        target="pocket-notes-ios", repo_url=str(repo), base_ref="main",
        idea="Call the app Pocket Notes Plus, version 1.1", mirror=tmp / "mirror.git", work_dir=tmp / "work",
        output_dir=tmp / "out", result_ref="refs/prototypes/plus/1",
        provider=ProviderConfig(name="replay", model="claude-sonnet-5-5", recordings=RECORDINGS), runners=queue,
    )  # fmt: skip


class Events:
    def __init__(self):
        self.items = []

    def emit(self, kind, data):
        self.items.append((kind, data))

    def stage(self, name):
        pass

    def cancelled(self):
        return False

    def texts(self):
        return [data.get("text", "") for kind, data in self.items if kind == "log"]


def test_an_ios_build_runs_its_build_and_tests_on_the_runner_and_packages_the_ipa_it_sends_back():
    tmp = scratch_dir("ios-")
    queue, sink = LocalQueue(), Events()
    result = agents.build(ios_spec(tmp, queue), sink)
    assert result.error is None, result.error and result.error.detail
    # verify ran both steps on the runner, the build step bringing back the app
    assert [(j.step, j.labels, j.collect) for j in queue.jobs] == [
        ("build", ("macos",), ("build/PocketNotes.ipa",)), ("test", ("macos",), ()),
    ], queue.jobs  # fmt: skip
    # the workspace travelled as a patch against the base commit, not as the repository
    patch = queue.jobs[0].patch
    assert "+\t<string>Pocket Notes Plus</string>" in patch and "PocketNotes/NotesView.swift" not in patch, patch
    (artifact,) = result.artifacts
    assert artifact.kind == "ipa" and artifact.filename.endswith("PocketNotes.ipa"), artifact
    meta = artifact.metadata
    assert (meta["bundle_id"], meta["display_name"], meta["version"], meta["build"]) == (
        "com.example.pocketnotes", "Pocket Notes Plus", "1.1", "7"), meta  # fmt: skip
    assert meta["icon_size"] == "180x180", meta
    assert any("Sending the build step to a runner labelled macos" in t for t in sink.texts()), sink.texts()
    # the result commit holds the change, not the runner's output
    assert [f["path"] for f in result.diffstat["files"]] == ["PocketNotes/Info.plist"], result.diffstat


def test_a_recipe_with_runs_on_fails_as_ours_when_the_build_has_no_runner_queue():
    tmp = scratch_dir("ios-")
    result = agents.build(ios_spec(tmp, None), Events())
    assert result.error is not None and result.error.code == "runner_unavailable", result.error
    assert result.error.family == "ours", "a missing runner is not the person's fault"
    assert "labelled macos" in result.error.detail, result.error.detail


def test_steps_without_runs_on_stay_in_the_local_sandbox():
    recipe = parse_recipe((IOS_REPO / "prototype.toml").read_text().replace('runs_on = ["macos"]\n', ""))
    local = object()
    assert route_steps(local, recipe, None, workspace=None, repo_url="", base_commit="", emit=print) is local


def test_the_runner_checks_out_the_base_commit_and_applies_the_patch_from_its_own_mirror():
    repo = make_repo({"a.txt": "one\n", "keep.txt": "same\n"})
    base = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (repo / "a.txt").write_text("two\n")
    (repo / "new.bin").write_bytes(bytes(range(256)))
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    change = subprocess.run(["git", "-C", str(repo), "diff", "--cached", "--binary", base], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard"], check=True)
    work = scratch_dir("runner-")
    tree = check_out({"repo_url": str(repo), "base_commit": base, "patch": change}, work, work / "job")
    assert (tree / "a.txt").read_text() == "two\n" and (tree / "keep.txt").read_text() == "same\n"
    assert (tree / "new.bin").read_bytes() == bytes(range(256)), "binary files travel in the patch"
    assert not (tree / ".git").exists(), "the runner's tree is no repository"


def test_a_patch_that_does_not_apply_is_the_runners_problem_in_plain_words():
    repo = make_repo({"a.txt": "one\n"})
    base = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    bad = "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-zero\n+two\n"
    work = scratch_dir("runner-")
    with pytest.raises(ServiceError) as failed:
        check_out({"repo_url": str(repo), "base_commit": base, "patch": bad}, work, work / "job")
    assert "does not apply" in failed.value.detail, failed.value.detail


def test_a_file_sent_back_never_follows_a_link_the_build_planted(tmp_path):
    tree = tmp_path / "tree"
    outside = tmp_path / "outside"
    tree.mkdir()
    outside.mkdir()
    os.symlink(outside, tree / "build")
    with pytest.raises(OSError):
        place_file(tree, "build/PocketNotes.ipa", b"app")
    assert not (outside / "PocketNotes.ipa").exists()
    place_file(tree, "dist/app.ipa", b"app")
    assert (tree / "dist" / "app.ipa").read_bytes() == b"app"
    with pytest.raises(ValueError):
        place_file(tree, "../escape.ipa", b"app")


def test_the_runner_command_refuses_to_start_without_a_token():
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "agents", "runner", "--store", "http://127.0.0.1:9", "--labels",
                           "macos"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "no token" in done.stderr, done.stderr


@pytest.fixture(autouse=True, scope="module")
def _python3_in_the_sandbox():
    if shutil.which("python3") is None:
        pytest.skip("the stand-in xcodebuild needs python3")
