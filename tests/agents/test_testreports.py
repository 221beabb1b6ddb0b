"""Test cases by name from every runner we know: the default console output of jest, vitest, mocha, node's
spec reporter, go test -v and gradle, TAP, unittest and pytest, a recipe's own pass/fail line patterns,
and JUnit XML reports read from the workspace — which the code under test wrote, so they are read
without following links, with caps, and with XML entities refused.

The sample outputs follow each runner's documented default format (colours already stripped, as the
sandbox does)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agents import testreports
from agents.testreports import TestCase, match_patterns, parse_summary, parse_tests, read_reports


def by_name(cases: list[TestCase]) -> dict[str, str]:
    return {c.name: "skipped" if c.skipped else "passed" if c.passed else "failed" for c in cases}


# --- jest -------------------------------------------------------------------------------------------
JEST_ONE_FILE = """\

> calc@1.0.0 test
> jest

 FAIL  src/calc.test.js
  ✓ loads the module (1 ms)
  calc
    ✓ adds two numbers (2 ms)
    ✕ subtracts (3 ms)
    ○ skipped divides
    ✎ todo multiplies
    rounding
      ✓ rounds half up

  ● calc › subtracts

    expect(received).toBe(expected) // Object.is equality

    Expected: -1
    Received: 1

       6 |
       7 |   test('subtracts', () => {
    >  8 |     expect(sub(1, 2)).toBe(-1);
         |                       ^
       9 |   });

      at Object.toBe (src/calc.test.js:8:23)

Test Suites: 1 failed, 1 total
Tests:       1 failed, 1 skipped, 1 todo, 3 passed, 6 total
Snapshots:   0 total
Time:        0.512 s
Ran all test suites.
"""

JEST_SEVERAL_FILES = """\
 PASS  src/format.test.js
 FAIL  src/calc.test.js
  ● calc › subtracts

    expect(received).toBe(expected) // Object.is equality

    Expected: -1
    Received: 1

      at Object.toBe (src/calc.test.js:8:23)

 PASS  src/parse.test.js (5.123 s)

Test Suites: 1 failed, 2 passed, 3 total
Tests:       1 failed, 11 passed, 12 total
Snapshots:   0 total
Time:        6.2 s
"""


def test_jest_names_each_test_under_its_describe_blocks_like_its_own_failure_headings():
    assert by_name(parse_tests(JEST_ONE_FILE)) == {
        "loads the module": "passed",
        "calc › adds two numbers": "passed",
        "calc › subtracts": "failed",
        "calc › divides": "skipped",
        "calc › multiplies": "skipped",
        "calc › rounding › rounds half up": "passed",
    }


def test_jest_with_several_files_names_files_and_the_failing_tests_of_its_headings():
    assert by_name(parse_tests(JEST_SEVERAL_FILES)) == {
        "src/format.test.js": "passed",
        "calc › subtracts": "failed",
        "src/parse.test.js": "passed",
    }
    assert parse_summary(JEST_SEVERAL_FILES) == {"passed": 11, "failed": 1, "skipped": 0, "total": 12}


def test_jest_summary_counts_todo_as_skipped():
    assert parse_summary(JEST_ONE_FILE) == {"passed": 3, "failed": 1, "skipped": 2, "total": 6}


def test_jests_summed_up_skipped_line_is_not_a_test():
    output = " PASS  src/a.test.js\n  suite\n    ✓ works (1 ms)\n    ○ skipped 4 tests\n"
    assert by_name(parse_tests(output)) == {"suite › works": "passed"}


# --- vitest -----------------------------------------------------------------------------------------
VITEST = """\

 RUN  v2.1.9 /workspace

 ✓ src/format.test.ts (2 tests) 3ms
 ❯ src/calc.test.ts (4 tests | 1 failed | 1 skipped) 7ms
   ✓ calc > adds two numbers 1ms
   × calc > subtracts 4ms
     → expected 1 to be -1 // Object.is equality
   ✓ calc > waits 100ms 102ms
   ↓ calc > divides

⎯⎯⎯⎯⎯⎯⎯ Failed Tests 1 ⎯⎯⎯⎯⎯⎯⎯

 FAIL  src/calc.test.ts > calc > subtracts
AssertionError: expected 1 to be -1 // Object.is equality

- Expected
+ Received

- -1
+ 1

 ❯ src/calc.test.ts:9:23
      7|   it('subtracts', () => {
      8|     expect(sub(1, 2)).toBe(-1)
       |                       ^
      9|   })

⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯⎯[1/1]⎯

 Test Files  1 failed | 1 passed (2)
      Tests  1 failed | 4 passed | 1 skipped (6)
   Start at  10:00:00
   Duration  312ms
"""


def test_vitest_names_the_tests_of_a_failed_file_and_its_summary_counts_the_rest():
    assert by_name(parse_tests(VITEST)) == {
        "calc > adds two numbers": "passed",
        "calc > subtracts": "failed",
        "calc > waits 100ms": "passed",
        "calc > divides": "skipped",
    }
    assert parse_summary(VITEST) == {"passed": 4, "failed": 1, "skipped": 1, "total": 6}


def test_vitest_nested_suite_lines_name_the_tests_below_them():
    output = (
        " RUN  v3.2.0 /workspace\n\n"
        " ❯ src/money.test.ts (9 tests | 1 failed) 56ms\n"
        "   ❯ employer match (1)\n"
        "     × caps the match at the yearly limit 6ms\n"
    )
    assert by_name(parse_tests(output)) == {"employer match › caps the match at the yearly limit": "failed"}


# --- mocha and node's spec reporter --------------------------------------------------------------------
MOCHA = """\

  calc
    ✔ adds two numbers
    1) subtracts
    - divides
    #format
      ✔ formats a total (52ms)

  report
    ✓ prints (older mocha)


  3 passing (61ms)
  1 pending
  1 failing

  1) calc
       subtracts:

      AssertionError [ERR_ASSERTION]: 1 == -1
      + expected - actual

      -1
      +1

      at Context.<anonymous> (test/calc.test.js:9:12)
"""


def test_mocha_spec_names_passing_failing_and_pending_tests_and_not_its_failure_epilogue():
    assert by_name(parse_tests(MOCHA)) == {
        "calc › adds two numbers": "passed",
        "calc › subtracts": "failed",
        "calc › divides": "skipped",
        "calc › #format › formats a total": "passed",
        "report › prints (older mocha)": "passed",
    }


def test_a_dash_line_is_not_a_pending_test_outside_mocha_output():
    assert parse_tests("Changes:\n  - fixed the build\n  - faster\n") == []


NODE_SPEC = """\
▶ format
  ✔ formats a total (0.31ms)
▶ format (1.02ms)
▶ calc
  ✔ adds two numbers (0.599007ms)
  ✖ subtracts (0.822909ms)
    AssertionError [ERR_ASSERTION]: -1 == 1
        at TestContext.<anonymous> (file:///workspace/calc.test.mjs:5:34)
        at async Suite.run (node:internal/test_runner/test:1135:7) {
      generatedMessage: true,
      code: 'ERR_ASSERTION',
      actual: -1,
      expected: 1,
      operator: '=='
    }

  ﹣ divides (0.106979ms) # SKIP
  ✔ later (0.091795ms) # TODO
✖ calc (2.684014ms)
✔ top level works (0.093658ms)
ℹ tests 6
ℹ suites 2
ℹ pass 3
ℹ fail 1
ℹ cancelled 0
ℹ skipped 1
ℹ todo 1
ℹ duration_ms 180.97945

✖ failing tests:

test at calc.test.mjs:5:3
✖ subtracts (0.822909ms)
  AssertionError [ERR_ASSERTION]: -1 == 1
"""


def test_node_spec_reporter_names_tests_under_suites_and_not_suites_or_its_repeated_failures():
    assert by_name(parse_tests(NODE_SPEC)) == {
        "format › formats a total": "passed",
        "calc › adds two numbers": "passed",
        "calc › subtracts": "failed",
        "calc › divides": "skipped",
        "calc › later": "skipped",
        "top level works": "passed",
    }


# --- go and gradle ----------------------------------------------------------------------------------
GO = """\
=== RUN   TestAdd
--- PASS: TestAdd (0.00s)
=== RUN   TestSub
    calc_test.go:14: Sub(1, 2) = 1, want -1
--- FAIL: TestSub (0.00s)
=== RUN   TestTable
=== RUN   TestTable/small_numbers
=== RUN   TestTable/large_numbers
--- PASS: TestTable (0.00s)
    --- PASS: TestTable/small_numbers (0.00s)
    --- FAIL: TestTable/large_numbers (0.01s)
=== RUN   TestDivide
    calc_test.go:30: not implemented yet
--- SKIP: TestDivide (0.00s)
FAIL
exit status 1
FAIL	example.com/calc	0.003s
ok  	example.com/calc/format	0.002s
"""


def test_go_test_verbose_names_tests_and_subtests_and_not_packages():
    assert by_name(parse_tests(GO)) == {
        "TestAdd": "passed",
        "TestSub": "failed",
        "TestTable": "passed",
        "TestTable/small_numbers": "passed",
        "TestTable/large_numbers": "failed",
        "TestDivide": "skipped",
    }


GRADLE_LOGGING = """\
> Task :compileJava
> Task :compileTestJava
> Task :test

com.example.CalcTest > addsTwoNumbers() PASSED

com.example.CalcTest > subtracts() FAILED
    org.opentest4j.AssertionFailedError at CalcTest.java:14

com.example.CalcTest > divides() SKIPPED

com.example.CalcTest > Rounding > roundsHalfUp() PASSED

4 tests completed, 1 failed, 1 skipped

> Task :test FAILED

FAILURE: Build failed with an exception.
"""

GRADLE_DEFAULT = """\
> Task :test FAILED

CalcTest > subtracts() FAILED
    org.opentest4j.AssertionFailedError at CalcTest.java:14

12 tests completed, 1 failed

FAILURE: Build failed with an exception.
"""


def test_gradle_test_logging_names_each_test_with_its_class():
    assert by_name(parse_tests(GRADLE_LOGGING)) == {
        "com.example.CalcTest > addsTwoNumbers()": "passed",
        "com.example.CalcTest > subtracts()": "failed",
        "com.example.CalcTest > divides()": "skipped",
        "com.example.CalcTest > Rounding > roundsHalfUp()": "passed",
    }


def test_gradle_by_default_names_failures_and_its_summary_counts_all():
    assert by_name(parse_tests(GRADLE_DEFAULT)) == {"CalcTest > subtracts()": "failed"}
    assert parse_summary(GRADLE_DEFAULT) == {"passed": 11, "failed": 1, "skipped": 0, "total": 12}


def test_gradle_summaries_of_several_test_tasks_add_up():
    output = "3 tests completed, 1 failed\n...\n5 tests completed, 2 failed, 1 skipped\n"
    assert parse_summary(output) == {"passed": 4, "failed": 3, "skipped": 1, "total": 8}


# --- what parse_tests read before: TAP, unittest, pytest ----------------------------------------------
def test_tap_unittest_and_pytest_are_still_read_as_before():
    tap = "TAP version 13\n# Subtest: adds\nok 1 - adds\nnot ok 2 - subtracts\nok 3 - later # SKIP not yet\n"
    assert by_name(parse_tests(tap)) == {"adds": "passed", "subtracts": "failed", "later": "skipped"}
    unit = (
        "test_adds (test_calc.AddTest.test_adds) ... ok\n"
        "test_subtracts (test_calc.AddTest.test_subtracts) ... FAIL\n"
        "test_later (test_calc.AddTest.test_later) ... skipped 'not yet'\n"
    )
    assert by_name(parse_tests(unit)) == {
        "test_calc.AddTest.test_adds": "passed",
        "test_calc.AddTest.test_subtracts": "failed",
        "test_calc.AddTest.test_later": "skipped",
    }
    pytest_v = (
        "tests/test_calc.py::test_adds PASSED                [ 33%]\n"
        "tests/test_calc.py::test_subtracts FAILED           [ 66%]\n"
        "tests/test_calc.py::test_later SKIPPED (not yet)    [100%]\n"
    )
    assert by_name(parse_tests(pytest_v)) == {
        "tests/test_calc.py::test_adds": "passed",
        "tests/test_calc.py::test_subtracts": "failed",
        "tests/test_calc.py::test_later": "skipped",
    }


def test_output_with_no_test_names_gives_none():
    assert parse_tests("> build\nCompiled successfully.\nDone in 2s\n") == []
    assert parse_summary("Done in 2s\n") is None


# --- a recipe's own patterns ------------------------------------------------------------------------
CUSTOM = """\
running 3 checks
PASS adds two numbers
FAIL subtracts: expected -1, got 1
PASS formats totals
ok 1 - this line looks like TAP but this runner does not speak it
3 checks, 1 failed
"""


def test_a_recipes_patterns_name_the_tests_and_replace_guessing():
    cases = parse_tests(CUSTOM, pass_pattern=r"^PASS (?P<name>.+)$", fail_pattern=r"^FAIL (?P<name>[^:]+)")
    assert by_name(cases) == {"adds two numbers": "passed", "subtracts": "failed", "formats totals": "passed"}


def test_a_pattern_without_a_named_group_uses_its_first_group():
    cases = match_patterns("[ok] one\n[fail] two\n", r"^\[ok\] (.+)$", r"^\[fail\] (.+)$")
    assert by_name(cases) == {"one": "passed", "two": "failed"}


def test_a_pattern_that_backtracks_forever_is_stopped_by_its_time_budget(monkeypatch):
    monkeypatch.setattr(testreports, "PATTERN_SECONDS", 0.3)
    output = "PASS quick\n" + "a" * 1000 + "!\nPASS never reached\n"
    started = time.monotonic()
    cases = match_patterns(output, r"^PASS (?P<name>.+)$|^(a|aa)+$", "")
    assert time.monotonic() - started < 5
    assert [c.name for c in cases] == ["quick"]


# --- JUnit XML reports ------------------------------------------------------------------------------
GRADLE_REPORT = """\
<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="com.example.CalcTest" tests="4" skipped="1" failures="1" errors="1" time="0.05">
  <properties/>
  <testcase name="addsTwoNumbers()" classname="com.example.CalcTest" time="0.01"/>
  <testcase name="subtracts()" classname="com.example.CalcTest" time="0.01">
    <failure message="expected: &lt;-1&gt; but was: &lt;1&gt;" type="org.opentest4j.AssertionFailedError">trace</failure>
  </testcase>
  <testcase name="divides()" classname="com.example.CalcTest" time="0.0">
    <skipped/>
  </testcase>
  <testcase name="parses()" classname="com.example.CalcTest" time="0.0">
    <error message="boom" type="java.lang.IllegalStateException">trace</error>
  </testcase>
  <system-out><![CDATA[]]></system-out>
</testsuite>
"""

PYTEST_REPORT = """\
<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="0" \
skipped="0" tests="1"><testcase classname="tests.test_calc" name="test_adds" time="0.001" /></testsuite></testsuites>
"""

JEST_JUNIT_REPORT = """\
<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="jest tests" tests="1" failures="0" errors="0" time="0.5">
  <testsuite name="calc" errors="0" failures="0" skipped="0" timestamp="2026-01-01T10:00:00" time="0.4" tests="1">
    <testcase classname="calc adds two numbers" name="calc adds two numbers" time="0.002"></testcase>
  </testsuite>
</testsuites>
"""

VITEST_REPORT = """\
<?xml version="1.0" encoding="UTF-8" ?>
<testsuites name="vitest tests" tests="1" failures="1" errors="0" time="0.01">
    <testsuite name="src/calc.test.ts" timestamp="2026-01-01T10:00:00" hostname="box" tests="1" failures="1">
        <testcase classname="src/calc.test.ts" name="calc &gt; subtracts" time="0.004">
            <failure message="expected 1 to be -1" type="AssertionError">trace</failure>
        </testcase>
    </testsuite>
</testsuites>
"""

BILLION_LAUGHS = """\
<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuite><testcase classname="bomb" name="&lol9;"/></testsuite>
"""

SECRET_REPORT = '<testsuite><testcase classname="host" name="secret_from_outside"/></testsuite>'


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_gradle_report_names_class_and_method_with_failures_errors_and_skips(tmp_path):
    write(tmp_path, "build/test-results/test/TEST-com.example.CalcTest.xml", GRADLE_REPORT)
    assert by_name(read_reports(tmp_path, "build/test-results/**/*.xml")) == {
        "com.example.CalcTest.addsTwoNumbers()": "passed",
        "com.example.CalcTest.subtracts()": "failed",
        "com.example.CalcTest.divides()": "skipped",
        "com.example.CalcTest.parses()": "failed",
    }


def test_reports_of_pytest_jest_junit_and_vitest_get_readable_names(tmp_path):
    write(tmp_path, "reports/pytest.xml", PYTEST_REPORT)
    write(tmp_path, "reports/jest.xml", JEST_JUNIT_REPORT)
    write(tmp_path, "reports/vitest.xml", VITEST_REPORT)
    assert by_name(read_reports(tmp_path, "reports/*.xml")) == {
        "tests.test_calc.test_adds": "passed",
        "calc adds two numbers": "passed",
        "src/calc.test.ts › calc > subtracts": "failed",
    }


def test_double_star_matches_any_folders_including_none_but_not_installed_packages(tmp_path):
    write(tmp_path, "TEST-top.xml", PYTEST_REPORT.replace("test_adds", "test_top"))
    write(tmp_path, "app/target/surefire-reports/TEST-deep.xml", PYTEST_REPORT.replace("test_adds", "test_deep"))
    write(tmp_path, "node_modules/pkg/TEST-pkg.xml", PYTEST_REPORT.replace("test_adds", "test_pkg"))
    names = {c.name for c in read_reports(tmp_path, "**/TEST-*.xml")}
    assert names == {"tests.test_calc.test_top", "tests.test_calc.test_deep"}


def test_a_report_that_links_outside_the_workspace_is_not_read(tmp_path):
    outside = write(tmp_path / "outside", "secret.xml", SECRET_REPORT)
    workspace = tmp_path / "workspace"
    write(workspace, "reports/real.xml", PYTEST_REPORT)
    (workspace / "reports" / "leak.xml").symlink_to(outside)
    (workspace / "linked").symlink_to(outside.parent, target_is_directory=True)
    assert {c.name for c in read_reports(workspace, "reports/*.xml")} == {"tests.test_calc.test_adds"}
    assert read_reports(workspace, "linked/*.xml") == []
    assert read_reports(workspace, "**/*.xml") == [TestCase("tests.test_calc.test_adds", True)]


def test_a_workspace_that_is_itself_a_link_is_not_read(tmp_path):
    write(tmp_path / "real", "reports/a.xml", PYTEST_REPORT)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert read_reports(tmp_path / "link", "reports/*.xml") == []


def test_a_hard_link_a_fifo_and_patterns_leaving_the_workspace_are_not_read(tmp_path):
    outside = write(tmp_path / "outside", "secret.xml", SECRET_REPORT)
    workspace = tmp_path / "workspace"
    (workspace / "reports").mkdir(parents=True)
    os.link(outside, workspace / "reports" / "linked.xml")
    os.mkfifo(workspace / "reports" / "pipe.xml")
    assert read_reports(workspace, "reports/*.xml") == []
    assert read_reports(workspace, "../outside/*.xml") == []
    assert read_reports(workspace, str(outside)) == []


def test_an_xml_entity_bomb_is_refused_and_the_other_reports_still_read(tmp_path):
    write(tmp_path, "reports/a-bomb.xml", BILLION_LAUGHS)
    write(tmp_path, "reports/b-real.xml", PYTEST_REPORT)
    started = time.monotonic()
    assert by_name(read_reports(tmp_path, "reports/*.xml")) == {"tests.test_calc.test_adds": "passed"}
    assert time.monotonic() - started < 5


def test_files_that_are_not_junit_xml_are_skipped(tmp_path):
    write(tmp_path, "reports/broken.xml", "<testsuite><testcase name='x'>")
    write(tmp_path, "reports/notes.xml", "just words")
    write(tmp_path, "reports/real.xml", PYTEST_REPORT)
    assert [c.name for c in read_reports(tmp_path, "reports/*.xml")] == ["tests.test_calc.test_adds"]


def test_too_big_reports_and_too_many_reports_are_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(testreports, "MAX_REPORT_FILE_BYTES", 1000)
    monkeypatch.setattr(testreports, "MAX_REPORT_FILES", 2)
    write(tmp_path, "reports/a.xml", PYTEST_REPORT.replace("test_adds", "test_a"))
    write(tmp_path, "reports/b.xml", PYTEST_REPORT.replace("test_adds", "test_b") + " " * 2000)
    write(tmp_path, "reports/c.xml", PYTEST_REPORT.replace("test_adds", "test_c"))
    write(tmp_path, "reports/d.xml", PYTEST_REPORT.replace("test_adds", "test_d"))
    # a and b are the two files looked at; b is too big
    assert [c.name for c in read_reports(tmp_path, "reports/*.xml")] == ["tests.test_calc.test_a"]


def test_reports_older_than_the_test_step_are_not_read(tmp_path):
    old = write(tmp_path, "reports/old.xml", PYTEST_REPORT.replace("test_adds", "test_old"))
    write(tmp_path, "reports/new.xml", PYTEST_REPORT.replace("test_adds", "test_new"))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    since = time.time() - 60
    assert [c.name for c in read_reports(tmp_path, "reports/*.xml", since=since)] == ["tests.test_calc.test_new"]


@pytest.mark.parametrize("name", ["reports/*.xml", "nothing/here.xml", "**"])
def test_no_matching_report_gives_no_cases(tmp_path, name):
    (tmp_path / "reports").mkdir()
    assert read_reports(tmp_path, name) == []
