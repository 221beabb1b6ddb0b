"""`python -m agents eval SUITE`: suites are checked with their lines, cases are real engine builds of the
example targets replayed through the real SDK (sample conversations, not a model), their checks run in
the real sandbox, on the result commit and in the build's browser check, and runs are kept and compared.
The run records written below by hand (cost, seconds, turns) are sample data."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from agents import workspace as git
from agents.errors import UserError
from agents.evals import (
    REPLAY_NOTICE,
    Check,
    Eval,
    Settings,
    SuiteError,
    check_page,
    find_run,
    load_suite,
    main,
    pick,
    print_comparison,
    run_checks,
    totals,
)
from agents.providers.replay import list_recordings, normalize_idea
from agents.spec import ArtifactFile, BuildResult

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SUITE = EXAMPLES / "evals" / "examples.yaml"
RECORDINGS = EXAMPLES / "recordings"


def write_suite(folder: Path, text: str) -> Path:
    (folder / "app").mkdir(exist_ok=True)
    path = folder / "suite.yaml"
    path.write_text(text)
    return path


# --- the suite file -------------------------------------------------------------------------------

GOOD_CASE = """\
targets:
  app: app
cases:
  - name: one
    target: app
    idea: Do a thing
    checks:
      - command: make check
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_CASE.replace("    idea: Do a thing\n", "    idae: Do a thing\n"),
         "suite.yaml line 6: cases[0] (one).idae: unknown key; a case has name, target, idea, attempts, checks"),
        (GOOD_CASE.replace("    idea: Do a thing\n", ""), "suite.yaml line 4: cases[0] (one): 'idea' is missing"),
        (GOOD_CASE.replace("    target: app\n", "    target: ap\n"),
         "suite.yaml line 5: cases[0] (one).target: 'ap' is not one of the targets (app)"),
        (GOOD_CASE.replace("  app: app\n", "  app: nowhere\n"), "suite.yaml line 2: targets.app: there is no folder "),
        (GOOD_CASE + "    attempts: 0\n", "suite.yaml line 9: cases[0] (one).attempts: a whole number from 1 to 10"),
        (GOOD_CASE.replace("      - command: make check\n", "      - command: make\n        file: x\n"),
         "suite.yaml line 8: cases[0] (one).checks[0]: a check has exactly one of 'command', 'file' or 'page'"),
        (GOOD_CASE.replace("      - command: make check\n", "      - file: ../../etc/passwd\n"),
         "suite.yaml line 8: cases[0] (one).checks[0].file: a path inside the repository, like src/theme.js"),
        (GOOD_CASE.replace("      - command: make check\n", "      - page: /\n"),
         "suite.yaml line 8: cases[0] (one).checks[0].text: the text the page must show"),
        (GOOD_CASE.replace("      - command: make check\n", "      - file: a.txt\n        contain: x\n"),
         "suite.yaml line 9: cases[0] (one).checks[0].contain: unknown key; a file check may also have "
         "'contains' or 'name'"),
        (GOOD_CASE.replace("    checks:\n      - command: make check\n", "    checks: []\n"),
         "suite.yaml line 7: cases[0] (one).checks: needs a list of one or more checks"),
        (GOOD_CASE.replace("    target: app\n", "    target: app\n    target: app\n"),
         "suite.yaml line 6: this is not valid YAML ('target' is given twice)"),
        (GOOD_CASE.replace("  - name: one\n", "  - name: one\n   oops\n"), "suite.yaml line 5: this is not valid YAML"),
        (GOOD_CASE + GOOD_CASE[GOOD_CASE.index("  - name"):],
         "suite.yaml line 9: cases[1] (one).name: another case is already called 'one'"),
        ("- just a list\n", "suite.yaml: a suite is a mapping with 'targets' and 'cases'"),
        (GOOD_CASE.replace("command: make check", "command: true"),
         "suite.yaml line 8: cases[0] (one).checks[0].command: YAML reads this as True: write it in quotes"),
    ],
)  # fmt: skip
def test_mistakes_in_a_suite_are_reported_with_their_line_and_key(scratch_dir, text, message):
    path = write_suite(scratch_dir("suite-"), text)

    with pytest.raises(SuiteError) as refused:
        load_suite(path)

    assert message in str(refused.value)


def test_every_mistake_of_a_suite_is_listed_at_once(scratch_dir):
    text = GOOD_CASE.replace("    target: app\n", "    target: other\n").replace("command: make check", "page: home")
    path = write_suite(scratch_dir("suite-"), text)

    with pytest.raises(SuiteError) as refused:
        load_suite(path)

    assert str(refused.value).splitlines() == [
        "suite.yaml line 5: cases[0] (one).target: 'other' is not one of the targets (app)",
        "suite.yaml line 8: cases[0] (one).checks[0].page: a path of the app starting with /, like /",
    ]


def test_a_suite_with_mistakes_stops_the_command_with_the_mistakes_and_no_traceback(scratch_dir, capsys):
    folder = scratch_dir("suite-")
    path = write_suite(folder, GOOD_CASE.replace("attempts", "").replace("idea:", "idear:"))

    assert main([str(path), "--results", str(folder / "results")]) == 2

    err = capsys.readouterr().err
    assert err.startswith("The suite cannot run:\nsuite.yaml line 6: cases[0] (one).idear: unknown key")
    assert "Traceback" not in err
    assert not (folder / "results").exists()  # nothing ran, nothing was stored


def test_the_example_suite_has_a_case_for_every_sample_conversation():
    suite = load_suite(SUITE)

    cases = {(case.target, normalize_idea(case.idea)) for case in suite.cases}
    samples = {(recording.target, normalize_idea(recording.idea)) for recording in list_recordings(RECORDINGS)}
    assert cases == samples
    assert len(cases) == 8
    assert all(Path(where).is_dir() for where in suite.targets.values())


def check_unchanged(runner: Eval, case, checks) -> list[dict]:
    """Run `checks` as if the case's build had changed nothing: on its target's commit as it is."""
    spec = runner.spec(case, 1)
    git.sync_mirror(spec.repo_url, spec.mirror)
    base = git.resolve(spec.mirror, "HEAD")
    unchanged = BuildResult(base_commit=base, result_commit=base, artifacts=[ARTIFACT])
    return run_checks(tuple(checks), spec, unchanged, runner.scratch / case.name / "checks")


@pytest.fixture
def runner(scratch_dir):
    suite = load_suite(SUITE)
    settings = Settings(provider="replay", model="sample", cache=scratch_dir("eval-cache-"), recordings=RECORDINGS)
    runner = Eval(suite, settings, stamp="unchanged", events_dir=scratch_dir("events-"))
    yield runner
    runner.close()


def test_the_example_suites_checks_do_not_hold_on_the_targets_as_they_are(runner):
    """A case cannot pass without its change: on each target's unchanged code, at least one of the
    command and file checks of every case fails (page checks need a build's browser check)."""
    held_anyway = []
    for case in runner.suite.cases:
        outcomes = check_unchanged(runner, case, [check for check in case.checks if check.kind != "page"])
        if all(outcome["passed"] for outcome in outcomes):
            held_anyway.append(case.name)

    assert held_anyway == []


def test_command_checks_run_in_the_sandbox_without_network_and_stop_at_their_timeout(runner):
    [case] = [case for case in runner.suite.cases if case.name == "episode-search"]
    checks = [
        Check("command", 1, command='test "$(pwd)" = /workspace && test "$(id -un)" = sandbox'),
        Check(
            "command", 2, command="python3 -c \"import urllib.request; urllib.request.urlopen('http://example.com')\""
        ),
        Check("command", 3, command="sleep 30", timeout=1),
    ]

    inside, network, slow = check_unchanged(runner, case, checks)

    assert (inside["passed"], inside["note"]) == (True, "")
    assert not network["passed"] and "exited with 1" in network["note"], network["note"]
    assert "urlopen error" in network["note"], network["note"]  # no name resolution, no route: no network
    assert not slow["passed"] and slow["note"].startswith("stopped after 1 s")
    assert slow["seconds"] < 10


# --- checks and totals ----------------------------------------------------------------------------

ARTIFACT = ArtifactFile("web", Path("/nonexistent/dist.zip"), 1, "0" * 64, "application/zip", "dist.zip")

# Sample data in the shape of agents.browser.SmokeReport.as_event().
SMOKE = {
    "passed": True,
    "skipped": "",
    "pages": [{"path": "/", "title": "Player", "text": "Web Player\n5 tracks ·\nTotal 1:58", "console_errors": []}],
}


@pytest.mark.parametrize(
    ("smoke", "check", "passed", "note"),
    [
        (SMOKE, Check("page", 1, page="/", text="5 tracks · Total 1:58"), True, ""),
        (SMOKE, Check("page", 1, page="/", text="Dark mode"), False, "/ does not show 'Dark mode'"),
        (SMOKE, Check("page", 1, page="/settings", text="Theme"), False,
         "the browser check did not visit /settings (it visited: /); list it in the recipe's [check] paths"),
        ({"passed": True, "skipped": "only a web artifact can be opened in the browser so far", "pages": []},
         Check("page", 1, page="/", text="Total"), False,
         "the browser check did not run: only a web artifact can be opened in the browser so far"),
        ({}, Check("page", 1, page="/", text="Total"), False, "the browser check did not run for this build"),
    ],
)  # fmt: skip
def test_a_page_check_reads_the_text_the_builds_browser_check_saw(smoke, check, passed, note):
    outcome = check_page(check, smoke)

    assert (outcome["passed"], outcome["note"]) == (passed, note)


def test_of_several_attempts_the_one_the_judge_ranks_first_is_checked_not_the_first():
    failed = BuildResult(error=UserError("tests_failed", "2 tests failed"), turns=5)
    doubted = BuildResult(artifacts=[ARTIFACT], judge={"accepted": False, "score": 0.5}, turns=9)
    accepted = BuildResult(artifacts=[ARTIFACT], judge={"accepted": True, "score": 1.0}, turns=12)

    assert pick([failed, doubted, accepted]) == 2
    assert pick([failed, doubted]) == 1


def case_record(name: str, status: str, cost: str, seconds: float, turns: int, agreed: bool | None = None) -> dict:
    """A case as a results file keeps it (sample data)."""
    return {"name": name, "target": "app", "status": status, "reason": "", "error": "", "cost": cost,
            "seconds": seconds, "turns": turns, "checks": [], "judge": {} if agreed is None else {"accepted": True},
            "judge_agreed": agreed, "attempts_run": 0 if status == "skipped" else 1, "picked": 1}  # fmt: skip


def test_the_cost_per_success_is_everything_spent_divided_by_the_cases_that_passed():
    cases = [
        case_record("a", "passed", "0.30", 40.0, 10, agreed=True),
        case_record("b", "failed", "0.40", 80.0, 30, agreed=False),
        case_record("c", "passed", "0.50", 60.0, 20),
        case_record("d", "skipped", "0", 0.0, 0),
    ]

    total = totals(cases)

    assert Decimal(total["cost_per_success"]) == Decimal("0.60")  # 1.20 spent for 2 that passed
    assert total["success_rate"] == pytest.approx(2 / 3)  # the skipped case is not counted
    assert (total["ran"], total["passed"], total["failed"], total["skipped"]) == (3, 2, 1, 1)
    assert (total["seconds_per_case"], total["turns_per_case"]) == (60.0, 20.0)
    assert (total["judged"], total["judge_agreed"]) == (2, 1)
    assert totals([case_record("b", "failed", "0.40", 80.0, 30)])["cost_per_success"] is None


def stored_run(results: Path, model: str, started: str, cases: list[dict]) -> Path:
    folder = results / model
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{started.replace(':', '')}.json"
    run = {"format": 1, "suite": "suite", "model": model, "model_dir": model, "replayed": False, "started": started,
           "cases": cases, "totals": totals(cases)}  # fmt: skip
    path.write_text(json.dumps(run))
    return path


def test_runs_are_found_by_model_or_as_the_latest_and_compared_over_the_cases_both_have(scratch_dir):
    results = scratch_dir("results-")
    older = stored_run(results, "model-a", "2026-11-01T10:00:00", [case_record("one", "failed", "0.90", 90.0, 30)])
    newer = stored_run(results, "model-b", "2026-12-01T10:00:00", [
        case_record("one", "passed", "0.20", 30.0, 12), case_record("two", "passed", "0.40", 50.0, 18)])  # fmt: skip

    assert find_run("model-a", results, "suite")[0] == older
    assert find_run("previous", results, "suite")[0] == newer
    assert find_run(str(older), results, "suite")[0] == older
    with pytest.raises(ValueError, match="--compare: no earlier run of model-c of the suite suite is kept in"):
        find_run("model-c", results, "suite")

    out = io.StringIO()
    print_comparison(json.loads(newer.read_text()), json.loads(older.read_text()), older, out)

    assert out.getvalue().splitlines()[1:] == [
        f"compared with model-a 2026-11-01T10:00 ({older}), over the 1 cases both runs have:",
        "                    this run       model-a 2026-11-01T10:00",
        "  success rate      100% (1 of 1)  0% (0 of 1)",
        "  cost per success  $0.20          none passed",
        "  time per case     30 s           1 min 30 s",
        "  turns per case    12.0           30.0",
        "  judge agreed      no judge       no judge",
        "  one               passed         failed (checks)",
    ]


# --- whole runs -----------------------------------------------------------------------------------


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


def test_a_replayed_case_is_built_checked_stored_and_compared(scratch_dir, no_key):
    """One real build of web-player (its sample conversation through the real SDK, git, the sandbox and
    the browser check), three checks that hold, one that does not, and an idea without a sample."""
    folder = scratch_dir("eval-")
    results = folder / "results"
    earlier = stored_run(results, "model-a", "2026-11-01T10:00:00", [
        case_record("total-duration", "passed", "0.35", 70.0, 14, agreed=True)])  # fmt: skip
    suite = folder / "suite.yaml"
    suite.write_text(f"""\
targets:
  web-player: {EXAMPLES / "targets" / "web-player"}
cases:
  - name: total-duration
    target: web-player
    idea: Show the total playlist duration
    checks:
      - command: node --test
      - file: src/playlist.js
        contains: totalDuration
      - page: /
        text: Total 1:58
      - name: a shuffle module was added
        command: test -f src/shuffle.js || exit 3
  - name: gold
    target: web-player
    idea: Paint it gold
    checks:
      - command: "true"
""")
    out = io.StringIO()

    code = main([str(suite), "--results", str(results), "--cache", str(folder / "cache"), "--compare", "model-a"],
                out=out)  # fmt: skip

    printed = out.getvalue()
    assert code == 1, printed
    assert printed.splitlines()[0].startswith(REPLAY_NOTICE + " (no ANTHROPIC_API_KEY")
    assert re.search(r"^total-duration \(web-player\): failed, 3 of 4 checks held, .* turns, \$0\.00", printed, re.M)
    assert "  held: page: / shows 'Total 1:58'\n" in printed
    assert "  FAILED: a shuffle module was added\n    exited with 3:\n" in printed
    assert "gold (web-player): skipped, no sample conversation for this idea\n" in printed
    assert "success rate: 0% (0 of 1)\ncost per success: none passed\n" in printed

    [stored] = [p for p in (results / "replay").iterdir() if p.suffix == ".json"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d{6}\.json", stored.name)
    assert f"results: {stored}\n" in printed
    run = json.loads(stored.read_text())
    assert (run["replayed"], run["notice"]) == (True, REPLAY_NOTICE)
    built, skipped = run["cases"]
    assert [c["passed"] for c in built["checks"]] == [True, True, True, False]
    assert (built["status"], built["reason"]) == ("failed", "1 of 4 checks did not hold")
    assert built["turns"] > 0 and built["smoke"]["passed"] is True
    # The result commit is kept in the cached mirror, under a ref of this run.
    mirror = next((folder / "cache").glob("*-web-player.git"))
    assert git.resolve(mirror, built["result_ref"]) == built["result_commit"]
    assert skipped["status"] == "skipped"
    assert (run["totals"]["ran"], run["totals"]["failed"], run["totals"]["skipped"]) == (1, 1, 1)

    assert f"compared with model-a 2026-11-01T10:00 ({earlier}), over the 1 cases both runs have:" in printed
    assert re.search(r"^  total-duration +failed \(checks\) +passed$", printed, re.M)


def test_several_attempts_are_all_built_and_the_one_the_judge_ranks_first_is_checked(scratch_dir, no_key):
    folder = scratch_dir("eval-")
    suite = write_suite(
        folder,
        f"""\
targets:
  podcast-api: {EXAMPLES / "targets" / "podcast-api"}
cases:
  - name: search
    target: podcast-api
    idea: Add search of episodes by title
    attempts: 2
    checks:
      - file: podcast_api/catalog.py
        contains: "query"
""",
    )
    out = io.StringIO()

    code = main([str(suite), "--results", str(folder / "results"), "--cache", str(folder / "cache")], out=out)

    assert code == 0, out.getvalue()
    [stored] = (folder / "results" / "replay").glob("*.json")
    [case] = json.loads(stored.read_text())["cases"]
    assert (case["status"], case["attempts_run"], case["picked"]) == ("passed", 2, 1)
    assert ", 2 attempts (checked #1), " in out.getvalue()
    events = sorted(p.name for p in stored.with_suffix("").iterdir())
    assert events == ["search-1.jsonl", "search-2.jsonl"]  # each build's events, to read when one fails


def test_the_command_says_first_that_it_replays_sample_conversations(scratch_dir):
    folder = scratch_dir("eval-")
    suite = write_suite(folder, GOOD_CASE.replace("Do a thing", "Paint it gold"))
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env["PYTHONPATH"] = str(ROOT)

    done = subprocess.run([sys.executable, "-m", "agents", "eval", str(suite), "--results", str(folder / "results")],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip

    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    assert first == f"{REPLAY_NOTICE} (no ANTHROPIC_API_KEY: the cases replay the hand-written samples of {RECORDINGS})"
    assert "one (app): skipped, no sample conversation for this idea" in rest
    [stored] = (folder / "results" / "replay").glob("*.json")
    assert json.loads(stored.read_text())["notice"] == REPLAY_NOTICE
