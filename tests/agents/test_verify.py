"""run_verify reads the tests by name in the real sandbox: from the JUnit XML reports the recipe names
(on the host, never through a link the command left), from the recipe's own line patterns, or from the
runner's output; and the report counts, lists and hands on what it read."""

from __future__ import annotations

import os
import time

from agents.recipe import parse_recipe
from agents.testreports import TestCase
from agents.verify import StepResult, VerifyReport, run_verify


def recipe_with(test: str) -> object:
    return parse_recipe(
        '[prototype]\nname = "Tiny"\nkind = "backend"\n\n'
        f"[test]\n{test}\ntimeout = 60\n\n"
        '[artifact]\nkind = "archive"\npath = "dist/tiny.tar"\n'
    )


def verify(sandbox, recipe) -> VerifyReport:
    return run_verify(sandbox, recipe, timeout=lambda wanted: wanted)


# A test command that writes a JUnit XML report and prints nothing a parser would recognise.
WRITES_REPORT = """
mkdir -p build/test-results/test
cat > build/test-results/test/TEST-CalcTest.xml <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="com.example.CalcTest" tests="2" failures="1">
  <testcase name="addsTwoNumbers()" classname="com.example.CalcTest"/>
  <testcase name="subtracts()" classname="com.example.CalcTest"><failure message="no">trace</failure></testcase>
</testsuite>
XML
printf '\\033[31mBUILD FAILED\\033[0m\\n'
exit 1
"""


def test_a_recipes_junit_reports_name_the_tests(sandbox, tree):
    (tree / "run-tests.sh").write_text(WRITES_REPORT)
    recipe = recipe_with('command = "bash run-tests.sh"\nreports = "build/test-results/**/*.xml"')

    report = verify(sandbox, recipe)

    assert not report.passed
    assert report.tests == [
        TestCase("com.example.CalcTest.addsTwoNumbers()", True),
        TestCase("com.example.CalcTest.subtracts()", False),
    ]
    assert report.headline() == "Tests failed: 1 failed, 1 passed."
    assert "Failing tests: com.example.CalcTest.subtracts()" in report.for_model()
    assert report.steps[0].output == "BUILD FAILED\n"  # the sandbox handed back the output without colours


def test_a_report_the_command_links_to_a_host_file_is_not_read(sandbox, tree, scratch_dir):
    outside = scratch_dir("outside-") / "secret.xml"
    outside.write_text('<testsuite><testcase classname="host" name="secret_from_outside"/></testsuite>')
    (tree / "run-tests.sh").write_text(
        f"mkdir -p reports && ln -s {outside} reports/leak.xml && ln -s {outside.parent} reports/dir\n"
        "echo 'ok 1 - from the output'\n"
    )
    recipe = recipe_with('command = "bash run-tests.sh"\nreports = "reports/**/*.xml"')

    report = verify(sandbox, recipe)

    assert (tree / "reports" / "leak.xml").is_symlink()  # the command did leave its links
    assert report.tests == [TestCase("from the output", True)]


def test_a_report_left_from_an_earlier_run_is_not_taken_for_this_one(sandbox, tree):
    old = tree / "reports" / "TEST-old.xml"
    old.parent.mkdir()
    old.write_text('<testsuite><testcase classname="Old" name="passedLastTime"/></testsuite>')
    os.utime(old, (time.time() - 600, time.time() - 600))
    (tree / "run-tests.sh").write_text("echo 'compilation failed'; echo 'not ok 1 - compiles'; exit 1\n")
    recipe = recipe_with('command = "bash run-tests.sh"\nreports = "reports/*.xml"')

    report = verify(sandbox, recipe)

    assert report.tests == [TestCase("compiles", False)]


def test_a_recipes_pass_and_fail_patterns_name_a_custom_runners_tests(sandbox, tree):
    (tree / "run-tests.sh").write_text(
        "echo 'PASS adds two numbers'\necho 'FAIL subtracts: got 1'\necho 'ok 1 - not a test here'\nexit 1\n"
    )
    recipe = recipe_with('command = "bash run-tests.sh"\npass = "^PASS (?P<name>.+)$"\nfail = "^FAIL (?P<name>[^:]+)"')

    report = verify(sandbox, recipe)

    assert report.tests == [TestCase("adds two numbers", True), TestCase("subtracts", False)]
    assert report.counts == {"passed": 1, "failed": 1, "skipped": 0}


def test_a_runner_that_names_only_failures_is_counted_from_its_summary(sandbox, tree):
    (tree / "run-tests.sh").write_text(
        "printf 'CalcTest > subtracts() FAILED\\n    AssertionFailedError\\n\\n12 tests completed, 1 failed\\n'\n"
        "exit 1\n"
    )
    report = verify(sandbox, recipe_with('command = "bash run-tests.sh"'))

    assert report.tests == [TestCase("CalcTest > subtracts()", False)]
    assert report.counts == {"passed": 11, "failed": 1, "skipped": 0}
    assert report.as_event()["counts"] == {"passed": 11, "failed": 1, "skipped": 0}
    assert report.headline() == "Tests failed: 1 failed, 11 passed."


# --- the report -------------------------------------------------------------------------------------
def failed_report(tests: list[TestCase], summary: dict | None = None) -> VerifyReport:
    step = StepResult("test", "npm test", 1, 1.0, "FAIL\n")
    return VerifyReport(passed=False, steps=[step], tests=tests, summary=summary)


def test_failing_names_lists_the_first_failures_in_order():
    tests = [TestCase(f"t{n}", n % 2 == 0) for n in range(50)]
    report = failed_report(tests)

    assert report.failing_names(3) == ["t1", "t3", "t5"]
    assert len(report.failing_names()) == 20


def test_the_model_reads_twenty_failing_names_and_how_many_more_there_are():
    report = failed_report([TestCase(f"t{n}", False) for n in range(25)])

    text = report.for_model()

    assert "Failing tests: t0; t1;" in text and "t19; and 5 more" in text and "t20" not in text


def test_the_event_keeps_its_shape_and_lists_failed_tests_first():
    tests = [TestCase("a", True), TestCase("b", False), TestCase("c", True, True), TestCase("d", False)]

    event = failed_report(tests).as_event()

    assert set(event) == {"passed", "headline", "counts", "tests", "steps", "smoke"}
    assert [t["name"] for t in event["tests"]] == ["b", "d", "a", "c"]
    assert event["tests"][0] == {"name": "b", "passed": False, "skipped": False}
    assert event["counts"] == {"passed": 1, "failed": 2, "skipped": 1}


def test_a_summary_smaller_than_the_named_tests_does_not_hide_them():
    tests = [TestCase("a", True), TestCase("b", False), TestCase("c", True)]
    report = failed_report(tests, summary={"passed": 1, "failed": 0, "skipped": 0, "total": 1})

    assert report.counts == {"passed": 2, "failed": 1, "skipped": 0}
