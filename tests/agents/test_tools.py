"""The agent's tools, for real: the editor on a real folder, commands and verify in the real sandbox."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from agents.errors import UserError
from agents.tools import EDITOR, MAX_RESULT_CHARS, MAX_SEARCH_LINES, Toolbox


def edit(toolbox, **tool_input):
    return toolbox.call(EDITOR, tool_input)


def numbered(outcome) -> list[tuple[int, str]]:
    """The (line number, text) pairs an editor result shows, whatever the number's padding."""
    return [(int(m[1]), m[2]) for m in re.finditer(r"^\s*(\d+)\t(.*)$", outcome.content, re.M)]


@pytest.fixture
def outside(scratch_dir):
    """A folder next to the workspace holding a file the agent must never see or change."""
    folder = scratch_dir("outside-")
    (folder / "secret.txt").write_text("the payroll\n")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- the editor stays in the workspace ---------------------------------------------------------------
@pytest.mark.parametrize("path", ["../secret.txt", "tests/../../secret.txt", "/etc/passwd", "/tmp"])
def test_the_editor_refuses_paths_outside_the_workspace(toolbox, path):
    outcome = edit(toolbox, command="view", path=path)

    assert outcome.is_error
    assert "outside the repository" in outcome.content


def test_the_editor_does_not_create_files_above_the_workspace(toolbox, tree):
    outcome = edit(toolbox, command="create", path="../planted.txt", file_text="boo")

    assert outcome.is_error and "outside the repository" in outcome.content
    assert not (tree.parent / "planted.txt").exists()
    assert not toolbox.edited


def test_the_editor_accepts_paths_under_slash_workspace_as_the_sandbox_names_them(toolbox):
    outcome = edit(toolbox, command="view", path="/workspace/calc.py")

    assert not outcome.is_error
    assert numbered(outcome) == [(1, "def add(a, b):"), (2, "    return a - b")]
    assert "calc.py" in edit(toolbox, command="view", path="/workspace").content


def test_an_absolute_path_that_only_starts_like_slash_workspace_is_refused_not_created_inside(toolbox, tree):
    outcome = edit(toolbox, command="create", path="/workspace-copy/notes.txt", file_text="hello")

    assert outcome.is_error and "outside the repository" in outcome.content
    assert not (tree / "-copy").exists()


def test_a_link_inside_the_workspace_to_a_file_outside_is_refused_for_every_command(toolbox, tree, outside):
    (tree / "notes.txt").symlink_to(outside / "secret.txt")

    outcomes = [
        edit(toolbox, command="view", path="notes.txt"),
        edit(toolbox, command="str_replace", path="notes.txt", old_str="payroll", new_str="nothing"),
        edit(toolbox, command="insert", path="notes.txt", insert_line=0, new_str="planted"),
        edit(toolbox, command="create", path="notes.txt", file_text="overwritten"),
    ]

    assert all(o.is_error and "outside the repository" in o.content for o in outcomes)
    assert not any("payroll" in o.content for o in outcomes)
    assert (outside / "secret.txt").read_text() == "the payroll\n"


def test_a_linked_folder_does_not_let_the_editor_out_of_the_workspace(toolbox, tree, outside):
    (tree / "vendor").symlink_to(outside, target_is_directory=True)

    outcomes = [
        edit(toolbox, command="view", path="vendor"),
        edit(toolbox, command="view", path="vendor/secret.txt"),
        edit(toolbox, command="create", path="vendor/new.txt", file_text="planted"),
        edit(toolbox, command="create", path="vendor/deeper/new.txt", file_text="planted"),
    ]

    assert all(o.is_error and "outside the repository" in o.content for o in outcomes)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_link_that_stays_inside_the_workspace_works(toolbox, tree):
    (tree / "alias.py").symlink_to("calc.py")

    outcome = edit(toolbox, command="str_replace", path="alias.py", old_str="a - b", new_str="a + b")

    assert not outcome.is_error, outcome.content
    assert "a + b" in (tree / "calc.py").read_text()


def test_the_editor_refuses_a_fifo_instead_of_hanging_on_it(toolbox, tree):
    os.mkfifo(tree / "pipe")

    outcomes = [
        edit(toolbox, command="view", path="pipe"),
        edit(toolbox, command="str_replace", path="pipe", old_str="a", new_str="b"),
        edit(toolbox, command="create", path="pipe", file_text="data"),
    ]

    assert all(o.is_error for o in outcomes), outcomes
    assert "not a file" in outcomes[0].content
    assert "not a regular file" in outcomes[2].content


# --- str_replace, insert, view -------------------------------------------------------------------
def test_str_replace_changes_the_one_match_and_shows_it_with_line_numbers(toolbox, tree):
    outcome = edit(toolbox, command="str_replace", path="calc.py", old_str="a - b", new_str="a + b")

    assert not outcome.is_error
    assert (tree / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert (2, "    return a + b") in numbered(outcome)
    assert toolbox.edited and toolbox.dirty


def test_str_replace_on_the_first_line_shows_that_line_with_its_own_number(toolbox, tree):
    (tree / "notes.txt").write_text("one\ntwo\nthree\nfour\nfive\n")

    first = edit(toolbox, command="str_replace", path="notes.txt", old_str="one", new_str="ONE")
    second = edit(toolbox, command="str_replace", path="notes.txt", old_str="two", new_str="TWO")

    # A line that holds only the new text is named by its number, not repeated (see the next test).
    assert first.content.splitlines()[1] == "[line 1: your new_str]"
    assert numbered(first)[:2] == [(2, "two"), (3, "three")]
    assert numbered(second)[:2] == [(1, "ONE"), (3, "three")]
    assert "[line 2: your new_str]" in second.content


def test_str_replace_names_the_lines_of_the_new_text_and_shows_only_what_surrounds_it(toolbox, tree):
    # The model has its new text in its own call: repeated in the result, it would be sent again in
    # every later request, in the part of each request prompt caching cannot reuse.
    (tree / "notes.txt").write_text("one\ntwo\nthree\nfour\nfive\nsix\n")
    new = "THREE-A\nTHREE-B\nTHREE-C\n"

    outcome = edit(toolbox, command="str_replace", path="notes.txt", old_str="three\n", new_str=new)

    assert not outcome.is_error
    assert (tree / "notes.txt").read_text() == "one\ntwo\nTHREE-A\nTHREE-B\nTHREE-C\nfour\nfive\nsix\n"
    assert outcome.content.splitlines() == [
        "Edited notes.txt:",
        "1\tone",
        "2\ttwo",
        "[lines 3-5: your new_str]",
        "6\tfour",
        "7\tfive",
        "8\tsix",
    ]
    assert "THREE" not in outcome.content


def test_str_replace_shows_a_line_it_only_partly_changed_whole(toolbox, tree):
    (tree / "notes.txt").write_text("one\ntwo\nthree\n")

    outcome = edit(toolbox, command="str_replace", path="notes.txt", old_str="wo\nthr", new_str="WO\nTHR")

    assert numbered(outcome) == [(1, "one"), (2, "tWO"), (3, "THRee")]


def test_str_replace_with_no_match_changes_nothing_and_says_so(toolbox, tree):
    outcome = edit(toolbox, command="str_replace", path="calc.py", old_str="a * b", new_str="a + b")

    assert outcome.is_error
    assert "No match" in outcome.content and "calc.py" in outcome.content
    assert (tree / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"
    assert not toolbox.edited


def test_str_replace_with_several_matches_names_their_lines_and_changes_nothing(toolbox, tree):
    text = "x = 1\ntotal = 0\ny = 2\n\ntotal = 0\n"
    (tree / "state.py").write_text(text)

    outcome = edit(toolbox, command="str_replace", path="state.py", old_str="total = 0", new_str="total = 1")

    assert outcome.is_error
    assert "occurs 2 times" in outcome.content
    assert "lines 2, 5" in outcome.content
    assert (tree / "state.py").read_text() == text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (0, "new\none\ntwo\nthree"),
        (1, "one\nnew\ntwo\nthree"),
        (3, "one\ntwo\nthree\nnew\n"),
    ],
)
def test_insert_puts_the_text_after_the_given_line(toolbox, tree, line, expected):
    (tree / "list.txt").write_text("one\ntwo\nthree")  # no newline at the end

    outcome = edit(toolbox, command="insert", path="list.txt", insert_line=line, new_str="new")

    assert not outcome.is_error, outcome.content
    assert f"after line {line}" in outcome.content
    assert (tree / "list.txt").read_text() == expected


def test_insert_beyond_the_end_is_refused(toolbox, tree):
    outcome = edit(toolbox, command="insert", path="calc.py", insert_line=9, new_str="x")

    assert outcome.is_error and "between 0 and 2" in outcome.content
    assert (tree / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"


def test_view_shows_only_the_asked_lines(toolbox, tree):
    (tree / "count.txt").write_text("".join(f"line {n}\n" for n in range(1, 11)))

    middle = edit(toolbox, command="view", path="count.txt", view_range=[3, 5])
    to_end = edit(toolbox, command="view", path="count.txt", view_range=[9, -1])

    assert numbered(middle) == [(3, "line 3"), (4, "line 4"), (5, "line 5")]
    assert numbered(to_end) == [(9, "line 9"), (10, "line 10")]
    assert edit(toolbox, command="view", path="count.txt", view_range=[3]).is_error


def test_a_view_range_past_the_end_says_how_long_the_file_is_instead_of_showing_it_empty(toolbox):
    outcome = edit(toolbox, command="view", path="calc.py", view_range=[40, 60])

    assert outcome.is_error
    assert "2 lines" in outcome.content
    assert "empty" not in outcome.content


def test_view_of_a_folder_lists_its_files_without_hidden_or_generated_ones(toolbox, tree):
    (tree / "node_modules" / "left-pad").mkdir(parents=True)
    (tree / "node_modules" / "left-pad" / "index.js").write_text("")
    (tree / ".cache").mkdir()
    (tree / ".cache" / "x").write_text("")

    outcome = edit(toolbox, command="view", path=".")

    assert outcome.content.splitlines() == ["README.md", "calc.py", "tests/test_calc.py"]


# --- commands --------------------------------------------------------------------------------------
def test_run_stops_a_command_at_its_timeout(toolbox):
    started = time.monotonic()
    outcome = toolbox.call("run", {"command": "echo started; sleep 30", "timeout": 1})

    assert time.monotonic() - started < 10
    assert outcome.is_error
    assert "stopped: timeout" in outcome.content
    assert "started" in outcome.content


def test_run_keeps_the_head_and_the_tail_of_long_output(toolbox):
    outcome = toolbox.call("run", {"command": "seq 1 40000"})

    assert not outcome.is_error
    assert len(outcome.content) < MAX_RESULT_CHARS + 200
    assert outcome.content.startswith("exit code 0\n1\n2\n3\n")
    assert outcome.content.endswith("39999\n40000\n")
    assert "characters cut" in outcome.content
    assert "\n20000\n" not in outcome.content


def test_run_reports_a_failing_command_as_an_error_with_its_exit_code(toolbox):
    outcome = toolbox.call("run", {"command": "echo nope >&2; exit 3"})

    assert outcome.is_error
    assert outcome.content == "exit code 3\nnope\n"


def test_search_finds_lines_with_their_paths_relative_to_the_repository(toolbox):
    outcome = toolbox.call("search", {"pattern": "def add"})
    in_tests = toolbox.call("search", {"pattern": "add", "path": "tests"})

    assert not outcome.is_error
    assert outcome.content == "calc.py:1:def add(a, b):"
    assert all(line.startswith("tests/test_calc.py:") for line in in_tests.content.splitlines())


def test_search_says_no_matches_plainly(toolbox):
    assert toolbox.call("search", {"pattern": "multiply"}).content == "No matches."


def test_search_returns_a_bounded_number_of_lines(toolbox, tree):
    for n in range(5):
        (tree / f"data{n}.txt").write_text("".join(f"needle {i}\n" for i in range(60)))

    outcome = toolbox.call("search", {"pattern": "needle", "glob": "*.txt"})

    lines = outcome.content.splitlines()
    assert len(lines) == MAX_SEARCH_LINES + 1
    assert lines[-1] == "[… 50 more matching lines …]"


def test_search_lists_its_matches_in_path_order_whatever_order_the_folder_lists_files_in(toolbox, tree):
    # The same search must give the same bytes every time (two attempts of one idea, a rebuilt
    # version): ripgrep otherwise prints files in the order the folder and its threads yield them.
    names = [f"part{n:02}.txt" for n in range(24)]
    for name in reversed(names):
        (tree / "parts").mkdir(exist_ok=True)
        (tree / "parts" / name).write_text("needle\n")

    outcome = toolbox.call("search", {"pattern": "needle", "path": "parts"})

    assert outcome.content.splitlines() == [f"parts/{name}:1:needle" for name in names]


def test_search_outside_the_workspace_is_refused(toolbox):
    outcome = toolbox.call("search", {"pattern": "root", "path": "/etc"})

    assert outcome.is_error and "outside the repository" in outcome.content


# --- verify ----------------------------------------------------------------------------------------
def test_verify_passes_when_the_build_and_tests_do(toolbox):
    edit(toolbox, command="str_replace", path="calc.py", old_str="a - b", new_str="a + b")

    outcome = toolbox.call("verify", {})

    assert not outcome.is_error
    assert outcome.content == "PASSED: Build and tests passed: 1 tests passed."
    assert toolbox.last_verify.passed and not toolbox.dirty


def test_verify_returns_the_failing_assertion_and_not_the_whole_output(toolbox, tree):
    (tree / "tests" / "test_chatty.py").write_text(
        "import unittest\n\n\nclass ChattyTest(unittest.TestCase):\n"
        "    def test_talks_a_lot(self):\n"
        "        for n in range(400):\n"
        "            print(f'chatter {n}')\n"
    )

    outcome = toolbox.call("verify", {})

    assert outcome.is_error
    assert outcome.content.startswith("FAILED: Tests failed: 1 failed, 1 passed.")
    assert "AssertionError: 0 != 4" in outcome.content
    assert "Failing tests: test_calc.AddTest.test_adds_two_numbers" in outcome.content
    assert "chatter 200" not in outcome.content
    assert len(outcome.content.splitlines()) < 80
    assert "2 attempts left" in outcome.content


def test_verify_ends_the_build_with_tests_failed_after_its_last_round(tree, sandbox, recipe):
    reports = []
    toolbox = Toolbox(tree, sandbox, recipe, max_verify_rounds=2, command_timeout=30, remaining=lambda: 600.0,
                      on_verify=reports.append)  # fmt: skip

    first = toolbox.call("verify", {})
    with pytest.raises(UserError) as caught:
        toolbox.call("verify", {})

    assert first.is_error and "1 attempts left" in first.content
    assert caught.value.code == "tests_failed"
    assert "AssertionError: 0 != 4" in caught.value.detail
    assert [r.passed for r in reports] == [False, False]
