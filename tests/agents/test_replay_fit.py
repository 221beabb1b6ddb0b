"""A sample conversation is replayed only on the code it was written for: its editor calls are tried in
memory against the start commit (agents.providers.replay.fit_problem), and a sample that does not fit
fails the build at once, before any sandbox or model call, with "sample_does_not_fit" (not charged).

The version "that already has dark mode" is made here the way the broken remix made it: the dark-mode
sample's own edits applied by the real Toolbox to the web player, committed on a branch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agents import BuildSpec, build
from agents import workspace as git
from agents.errors import OURS, SampleDoesNotFit, ServiceError
from agents.providers import ProviderConfig
from agents.providers.replay import FOLDER, Recording, dry_run, fit_problem, list_recordings, sample_calls
from agents.tools import EDITOR, Toolbox
from tests.agents.sinks import Sink

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECORDINGS = EXAMPLES / "recordings"
SHIPPED = list_recordings(RECORDINGS)


class StagedSink(Sink):
    def __init__(self):
        super().__init__()
        self.stages: list[str] = []

    def stage(self, name):
        self.stages.append(name)


def sample(name: str) -> Recording:
    return Recording.load(RECORDINGS / "web-player" / f"{name}.json")


def editor(**tool_input) -> tuple[str, dict]:
    return (EDITOR, tool_input)


def git_in(repo: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "T",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def web_player(make_repo, scratch_dir):
    """The web player's repository with a branch `dark` on which the dark-mode sample was already applied,
    and a bare mirror of it, as builds read it."""
    repo = make_repo(source=EXAMPLES / "targets" / "web-player")
    git_in(repo, "checkout", "-q", "-b", "dark")
    toolbox = Toolbox(repo, None, None, max_verify_rounds=1, command_timeout=1, remaining=lambda: 60)
    for name, tool_input in sample_calls(sample("dark-mode")):
        if name == EDITOR:
            assert not toolbox.call(name, tool_input).is_error
    git_in(repo, "add", "-A")
    git_in(repo, "commit", "-q", "-m", "Add a dark mode toggle")
    git_in(repo, "checkout", "-q", "main")
    mirror = scratch_dir("mirror-") / "web-player.git"
    git.sync_mirror(str(repo), mirror)
    return repo, mirror


# --- the rule, on files in memory -------------------------------------------------------------------
def test_a_sample_creating_a_file_that_is_already_there_does_not_fit():
    calls = [editor(command="create", path="src/theme.js", file_text="export const x = 1;\n")]

    assert (
        dry_run(calls, {"src/theme.js": "// already here\n"})
        == "it creates src/theme.js, which this version already has"
    )
    assert dry_run(calls, {"src/theme.js": None}) is None


def test_a_file_the_sample_created_itself_may_be_written_again_and_edited():
    calls = [
        editor(command="create", path="notes.md", file_text="one\n"),
        editor(command="create", path="/workspace/notes.md", file_text="one\ntwo\n"),
        editor(command="str_replace", path="notes.md", old_str="two", new_str="three"),
        editor(command="insert", path="notes.md", insert_line=2, new_str="four"),
        editor(command="view", path="notes.md"),
    ]
    files = {"notes.md": None}

    assert dry_run(calls, files) is None
    assert files["notes.md"] == "one\nthree\nfour\n"


def test_a_passage_must_be_found_exactly_once_as_the_edits_left_it():
    once = "import { a } from './a.js';\n"
    replace = editor(command="str_replace", path="src/app.js", old_str="import { a }", new_str="import { a, b }")

    assert dry_run([replace], {"src/app.js": once}) is None
    # The same edit a second time no longer finds its passage: the first one changed it.
    assert dry_run([replace, replace], {"src/app.js": once}) == (
        "it changes a passage of src/app.js that this version does not have"
    )
    assert dry_run([replace], {"src/app.js": once * 2}) == (
        "it changes a passage of src/app.js that this version has 2 times, where the sample expects it once"
    )
    assert dry_run([replace], {"src/app.js": None}) == "it changes src/app.js, which this version does not have"


def test_an_insert_needs_its_line_and_a_view_its_file():
    insert = editor(command="insert", path="src/styles.css", insert_line=87, new_str=".toggle {}")

    assert dry_run([insert], {"src/styles.css": "a {}\n" * 87}) is None
    assert dry_run([insert], {"src/styles.css": "a {}\n" * 80}) == (
        "it inserts after line 87 of src/styles.css, which has 80 lines in this version"
    )
    assert dry_run([editor(command="view", path="src/gone.js")], {"src/gone.js": None}) == (
        "it reads src/gone.js, which this version does not have"
    )
    assert dry_run([editor(command="view", path="src")], {"src": FOLDER}) is None
    assert dry_run([editor(command="create", path="src", file_text="x")], {"src": FOLDER}) == (
        "it creates src, which is a folder in this version"
    )


def test_the_dry_run_stops_at_a_command_whose_effect_only_running_it_would_tell():
    calls = [("run", {"command": "npm run generate"}), editor(command="view", path="generated.js")]

    assert dry_run(calls, {"generated.js": None}) is None
    assert dry_run(list(reversed(calls)), {"generated.js": None}) == (
        "it reads generated.js, which this version does not have"
    )


# --- the rule, on real commits ------------------------------------------------------------------------
@pytest.mark.parametrize("recording", SHIPPED, ids=[f"{r.target}/{r.path.stem}" for r in SHIPPED])
def test_every_shipped_sample_fits_its_example_targets_default_branch(make_repo, scratch_dir, recording):
    repo = make_repo(source=EXAMPLES / "targets" / recording.target)
    mirror = scratch_dir("mirror-") / "target.git"
    git.sync_mirror(str(repo), mirror)

    assert fit_problem(recording, mirror, git.resolve(mirror, "main")) is None


def test_there_are_eight_shipped_samples():
    assert len(SHIPPED) == 8


def test_the_dark_mode_sample_does_not_fit_a_version_that_already_has_dark_mode(web_player):
    _, mirror = web_player

    assert fit_problem(sample("dark-mode"), mirror, git.resolve(mirror, "main")) is None
    assert fit_problem(sample("dark-mode"), mirror, git.resolve(mirror, "dark")) == (
        "it creates src/theme.js, which this version already has"
    )
    # Another sample that changes other passages still fits the dark-mode version.
    assert fit_problem(sample("total-duration"), mirror, git.resolve(mirror, "dark")) is None


def test_a_mirror_that_cannot_tell_is_a_failure_of_ours_not_a_sample_that_does_not_fit(web_player, scratch_dir):
    _, mirror = web_player
    # A commit the mirror lacks (not fetched yet) would make every file look missing: it is said instead.
    for where in (scratch_dir("nothing-") / "missing.git", mirror):
        with pytest.raises(ServiceError) as raised:
            fit_problem(sample("dark-mode"), where, "0123456789" * 4)
        assert raised.value.code == "workspace_failed"


# --- the engine ---------------------------------------------------------------------------------------
def dark_mode_again(web_player, scratch_dir, **config) -> tuple:
    """The broken remix: the dark-mode sample replayed on top of the version that already has it."""
    repo, _ = web_player
    work = scratch_dir("build-")
    spec = BuildSpec(
        target="web-player", repo_url=str(repo), base_ref="main", start_commit="dark", idea="Add a dark mode toggle", browser_check=False,
        mirror=work / "mirror.git", work_dir=work / "work", output_dir=work / "out",
        result_ref="refs/prototypes/remix/1", provider=ProviderConfig(name="replay", recordings=RECORDINGS, **config),
    )  # fmt: skip
    sink = StagedSink()
    return build(spec, sink), sink


def test_the_engine_refuses_the_sample_on_a_version_it_does_not_fit_before_any_sandbox_or_model_call(
    web_player, scratch_dir
):
    result, sink = dark_mode_again(web_player, scratch_dir)

    error = result.error
    assert error is not None and error.code == "sample_does_not_fit"
    assert error.family == OURS  # not charged: nothing was spent
    assert error.message == (
        "The sample conversation for “Add a dark mode toggle” was written for Web Player's code as it is on its "
        "default branch; this version already differs where it makes its change (it creates src/theme.js, which "
        "this version already has), so it cannot be replayed here. Nothing was spent. With a Claude API key any "
        "idea can be built."
    )
    assert error.detail == "it creates src/theme.js, which this version already has"
    assert result.turns == 0 and result.cost == 0 and not result.artifacts
    assert sink.stages == []  # never reached "running": no sandbox, no agent
    assert [d["step"] for kind, d in sink.events if kind == "step"] == ["workspace"]


def test_the_check_can_be_turned_off_only_to_reproduce_the_broken_build(web_player, scratch_dir):
    result, _ = dark_mode_again(web_player, scratch_dir, check_fit=False)

    # What the offline demo did before: the sample replays to the end on code it was not written for.
    assert result.error is None or result.error.code != "sample_does_not_fit"
    assert result.turns == len(sample("dark-mode").responses)


def test_a_default_branch_that_moved_on_since_the_sample_asks_an_admin_to_update_it():
    error = SampleDoesNotFit("Add a dark mode toggle", "Web Player", "it reads src/app.js, which this version does "
                             "not have", on_version=False)  # fmt: skip

    assert error.family == OURS and error.code == "sample_does_not_fit"
    assert "that code has changed since" in error.message and "An admin needs to update" in error.message
    assert "(it reads src/app.js, which this version does not have)" in error.message
