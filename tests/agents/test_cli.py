"""The engine's command line, `python -m agents build`, run as a person runs it: in its own process, from
a folder of their choosing, with paths relative to it, replaying a sample conversation through the real
engine, git and sandbox."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agents.__main__ import main, next_ref, repo_source
from agents.packaging import packaged_name

ROOT = Path(__file__).resolve().parents[2]
NOTES_APP = ROOT / "examples" / "targets" / "notes-app"
IDEA = "Show how many notes I have"  # one of notes-app's sample conversations


def commit_all(repo: Path) -> None:
    """Make `repo` a git repository whose one commit holds its files, on branch main."""
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
    for argv in (["init", "-q", "-b", "main"], ["add", "--all"], [*identity, "commit", "-q", "-m", "The app"]):
        subprocess.run(["git", *argv], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def person(scratch_dir):
    """A person's folders: their clone of notes-app without a prototype.toml (the recipe is a file beside
    it), a folder they run the command from, and a private temporary folder that shows what is left."""
    home = scratch_dir("person-")
    repo = home / "notes-app"
    shutil.copytree(NOTES_APP, repo, ignore=shutil.ignore_patterns("__pycache__", "dist", "build"))
    (home / "notes-recipe.toml").write_text((repo / "prototype.toml").read_text())
    (repo / "prototype.toml").unlink()
    commit_all(repo)
    (home / "work").mkdir()
    (home / "tmp").mkdir()
    return home


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),  # tempfile.mkdtemp's folder: whatever the command leaves shows here
        "PYTHONPATH": str(ROOT),
    }
    if "--browser-check" not in args:  # only the test that looks at the screenshots waits for the browser
        args = (*args, "--no-browser-check")
    return subprocess.run([sys.executable, "-m", "agents", "build", *args], cwd=home / "work", env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_build_from_another_folder_names_the_artifact_once_prints_the_commit_and_leaves_no_temp_folder(person):
    done = run_cli(person, "--repo", "../notes-app", "--recipe", "../notes-recipe.toml", "--idea", IDEA,
                   "--out", "out", "--browser-check")  # fmt: skip

    assert done.returncode == 0, done.stderr + done.stdout[-3000:]
    out = person / "work" / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "notes-app.patch",
        "notes-app.pyz",
        "prototypes.git",
        "screenshots",
    ]
    assert f"artifact: {out / 'notes-app.pyz'} (" in done.stdout
    assert f"screenshots: 4 (before and after the change) in {out / 'screenshots'}\n" in done.stdout
    found = re.search(r"^result commit: ([0-9a-f]{40}), kept in (\S+) as (refs/prototypes/notes-app/1)$",
                      done.stdout, re.M)  # fmt: skip
    assert found, done.stdout[-2000:]
    commit, results, ref = found.groups()
    assert results == str(out / "prototypes.git")
    fetch = f"git fetch {results} {ref}:prototype-notes-app-1"
    assert f"to get it into your clone: {fetch}\n" in done.stdout
    # The judge is on by default: the sample carries its own review, played back and said to be one.
    assert "sample review: 4 of 4 checklist items done. The notes page and the API both say" in done.stdout
    assert list((person / "tmp").iterdir()) == []

    # The printed line brings the change into the person's clone, on a branch of its own.
    subprocess.run(fetch.split(), cwd=person / "notes-app", check=True, capture_output=True)
    log = subprocess.run(["git", "log", "--format=%H %s", "-1", "prototype-notes-app-1"], cwd=person / "notes-app",
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert log == f"{commit} {IDEA}\n"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=person / "notes-app", capture_output=True, text=True)
    assert status.stdout == ""  # nothing was written into the person's working tree


def test_a_failed_build_says_why_and_leaves_no_temp_folder(person):
    done = run_cli(person, "--repo", "../notes-app", "--recipe", "../notes-recipe.toml", "--idea", "Paint it gold")

    assert done.returncode == 1
    assert "failed (no_recording)" in done.stderr
    assert list((person / "tmp").iterdir()) == []


def test_keep_leaves_the_builds_folder_and_says_where(person):
    done = run_cli(person, "--repo", "../notes-app", "--recipe", "../notes-recipe.toml", "--idea", "Paint it gold",
                   "--keep")  # fmt: skip

    kept = list((person / "tmp").iterdir())
    assert len(kept) == 1 and kept[0].is_dir()
    assert f"kept the build's temporary folder: {kept[0]}" in done.stdout
    shutil.rmtree(kept[0])


def test_a_second_result_of_the_same_target_gets_the_next_ref(scratch_dir):
    results = scratch_dir("results-") / "prototypes.git"

    assert next_ref(results, "notes-app") == "refs/prototypes/notes-app/1"  # no repository yet
    subprocess.run(["git", "init", "-q", "--bare", str(results)], check=True)
    tree = subprocess.run(["git", f"--git-dir={results}", "mktree"], input="", capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    commit = subprocess.run(["git", f"--git-dir={results}", "-c", "user.name=T", "-c", "user.email=t@x", "commit-tree",
                             tree, "-m", "r"], capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    for ref in ("refs/prototypes/notes-app/1", "refs/prototypes/notes-app/2", "refs/prototypes/other/3"):
        subprocess.run(["git", f"--git-dir={results}", "update-ref", ref, commit], check=True)

    assert next_ref(results, "notes-app") == "refs/prototypes/notes-app/3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allow-host", "registry.npmjs.org", "--allow-host", "10.0.0.1"],
         "--allow-host: '10.0.0.1' is an IP address; only host names can be allowed"),
        (["--allow-host", "https://pypi.org/simple"],
         "--allow-host: 'https://pypi.org/simple' is not a host name like pypi.org"),
        (["--recipe", "missing.toml"], "--recipe: cannot read "),
        (["--recipe", "bad.toml"], "--recipe bad.toml: prototype.toml line 1: this is not valid TOML"),
        (["--repo", "no-such-folder"], "--repo: there is no folder "),
    ],
)  # fmt: skip
def test_wrong_options_are_refused_before_anything_runs_saying_what_is_wrong(
    person, monkeypatch, capsys, args, message
):
    monkeypatch.chdir(person)
    monkeypatch.setattr(tempfile, "tempdir", str(person / "tmp"))
    (person / "bad.toml").write_text("[prototype\n")
    options = {"--repo": "notes-app", "--idea": IDEA}
    for name, value in zip(args[::2], args[1::2], strict=True):
        options[name] = value if name != "--allow-host" else options.get(name, []) + [value]

    argv = ["build"]
    for name, value in options.items():
        for one in value if isinstance(value, list) else [value]:
            argv += [name, one]
    with pytest.raises(SystemExit) as stopped:
        main(argv)

    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert list((person / "tmp").iterdir()) == []


def test_a_local_path_is_made_absolute_and_a_url_is_kept(person, monkeypatch):
    monkeypatch.chdir(person / "work")

    assert repo_source("../notes-app") == str(person / "notes-app")
    urls = ("https://example.com/org/app.git", "git@example.com:org/app.git", "example.com:org/app.git",
            "file:///srv/app.git")  # fmt: skip
    for url in urls:
        assert repo_source(url) == url


def test_the_artifact_keeps_its_own_name_when_it_already_says_which_app_it_is():
    assert packaged_name("notes-app", "notes-app.pyz", "pyz") == "notes-app.pyz"
    assert packaged_name("player", "app-debug.apk", "apk") == "player-app-debug.apk"
    assert packaged_name("shop", "shop_api-1.0-py3-none-any.whl", "wheel") == "shop_api-1.0-py3-none-any.whl"


def test_a_results_folder_that_is_not_a_repository_is_refused_before_the_build(person, monkeypatch, capsys):
    monkeypatch.chdir(person / "work")
    (person / "work" / "junk.git").mkdir()
    (person / "work" / "junk.git" / "HEAD").write_text("not a ref\n")

    code = main(["build", "--repo", "../notes-app", "--idea", IDEA, "--results", "junk.git"])

    assert code == 2
    assert f"--results: {person / 'work' / 'junk.git'} is not a git repository" in capsys.readouterr().err


def test_a_second_run_on_the_same_repository_takes_its_dependencies_from_the_cache(scratch_dir):
    """The mirror and its dependency layers live in --cache between runs: the second build of a repository
    with a lockfile runs no setup."""
    home = scratch_dir("person-")
    repo = home / "orders-web"
    shutil.copytree(ROOT / "tests" / "repos" / "orders-web", repo)
    commit_all(repo)
    (home / "work").mkdir()
    (home / "tmp").mkdir()
    args = ("--repo", "../orders-web", "--idea", "Show how many items each order has",
            "--recordings", str(ROOT / "tests" / "recordings"), "--out", "out")  # fmt: skip

    first, second = run_cli(home, *args), run_cli(home, *args)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "Setting up: npm ci" in first.stdout and "Setting up" not in second.stdout
    assert "setup skipped" in second.stdout
    assert [p.name.split("-", 1)[1] for p in (home / ".cache" / "prototype-store").glob("*.git")] == ["orders-web.git"]
    assert list((home / "tmp").iterdir()) == []


def test_a_file_that_is_not_a_sample_conversation_is_named_not_a_traceback(person):
    (person / "work" / "notes.txt").write_text("not json")
    run = run_cli(person, "--repo", "../notes-app", "--recipe", "../notes-recipe.toml", "--idea", IDEA,
                  "--cassette", "notes.txt")  # fmt: skip
    assert run.returncode == 1
    assert "notes.txt cannot be replayed: it is not a sample conversation" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
