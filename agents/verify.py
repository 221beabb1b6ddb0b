"""Verification: the recipe's own build and tests, run in the sandbox, read back in plain terms."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agents.browser import SmokeReport
from agents.recipe import Recipe, Step
from agents.testreports import TestCase, parse_summary, parse_tests, read_reports

_FAILURE_HINT = re.compile(
    r"(not ok|FAIL|ERROR|Error|error:|Traceback|AssertionError|Expected|expected|actual|"
    r"\bat .*:\d+|File \".*\", line \d+|SyntaxError|Cannot find|No such file)"
)
EXCERPT_LINES = 60
EVENT_TESTS = 500
REPORT_CLOCK_SLACK = 1.0  # seconds: a report written as the test step started still counts


@dataclass
class StepResult:
    step: str  # "build", "test" or "smoke" (the browser check)
    command: str
    exit_code: int
    duration: float
    output: str
    killed_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None


@dataclass
class VerifyReport:
    passed: bool
    steps: list[StepResult] = field(default_factory=list)
    tests: list[TestCase] = field(default_factory=list)
    # The counts a runner printed at the end (parse_summary), for runners that name only some tests.
    summary: dict[str, int] | None = None
    # The browser check (agents/browser.py), run once the build and tests passed; None when it did not run.
    smoke: SmokeReport | None = None

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)

    @property
    def counts(self) -> dict[str, int]:
        """passed, failed and skipped: of the named tests, or the runner's own summary when it counted
        more tests than it named (gradle names only failures, jest only files when it runs several)."""
        if self.summary and self.summary["total"] > len(self.tests):
            return {key: self.summary[key] for key in ("passed", "failed", "skipped")}
        return {
            "passed": sum(t.passed and not t.skipped for t in self.tests),
            "failed": sum(not t.passed for t in self.tests),
            "skipped": sum(t.skipped for t in self.tests),
        }

    def headline(self) -> str:
        counts = self.counts
        if self.passed:
            if self.tests:
                return f"Build and tests passed: {counts['passed']} tests passed."
            return "Build and tests passed."
        failed = self.failed_step
        if failed is None:
            return "Verification did not pass."
        if failed.step == "smoke" and self.smoke is not None:
            return self.smoke.headline()
        if failed.killed_reason == "timeout":
            return f"The {failed.step} step took too long and was stopped."
        if failed.step == "test" and counts["failed"]:
            return f"Tests failed: {counts['failed']} failed, {counts['passed']} passed."
        return f"The {failed.step} step failed (exit code {failed.exit_code})."

    def failing_names(self, limit: int = 20) -> list[str]:
        """The names of the first `limit` failed tests, in the order the runner reported them."""
        return [t.name for t in self.tests if not t.passed][:limit]

    def for_model(self) -> str:
        """What the agent reads: the headline and, on failure, only the lines that matter."""
        lines = [("PASSED: " if self.passed else "FAILED: ") + self.headline()]
        failed = self.failed_step
        if failed is not None and failed.step == "smoke" and self.smoke is not None:
            lines += self.smoke.for_model().splitlines()[1:]  # its own headline is already the first line
        elif failed is not None:
            lines.append(f"$ {failed.command}")
            lines.append(failure_excerpt(failed.output))
        if self.passed and self.smoke is not None and not self.smoke.skipped:
            lines += self.smoke.for_model().removeprefix("PASSED: ").splitlines()
        failing = self.failing_names(20)
        if failing:
            more = self.counts["failed"] - len(failing)
            lines.append("Failing tests: " + "; ".join(failing) + (f"; and {more} more" if more > 0 else ""))
        return "\n".join(lines)

    def as_event(self) -> dict:
        return {
            "passed": self.passed,
            "headline": self.headline(),
            "counts": self.counts,
            # Failed ones first, so that a long run cut at EVENT_TESTS still shows every failure it can.
            "tests": [asdict(t) for t in sorted(self.tests, key=lambda t: t.passed)[:EVENT_TESTS]],
            "steps": [
                {"step": s.step, "command": s.command, "exit_code": s.exit_code, "duration": round(s.duration, 2),
                 "killed_reason": s.killed_reason, "tail": tail(s.output, 40)}
                for s in self.steps
            ],
            "smoke": self.smoke.as_event() if self.smoke is not None else None,
        }  # fmt: skip


def tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def read_tests(
    output: str, step: Step, workspace: Path | None, *, since: float = 0.0
) -> tuple[list[TestCase], dict[str, int] | None]:
    """The test cases of one test step and the runner's summary counts. The recipe's JUnit XML reports
    (`reports`, written at `since` or later) come first; without any, the output is read, with the
    recipe's `pass`/`fail` patterns when it has them (they replace recognising the format)."""
    if step.reports and workspace is not None:
        cases = read_reports(workspace, step.reports, since=since)
        if cases:
            return cases, None
    if step.pass_pattern or step.fail_pattern:
        return parse_tests(output, pass_pattern=step.pass_pattern, fail_pattern=step.fail_pattern), None
    return parse_tests(output), parse_summary(output)


def failure_excerpt(output: str, limit: int = EXCERPT_LINES) -> str:
    """The lines around failure markers, or the tail when nothing stands out."""
    lines = output.splitlines()
    keep: set[int] = set()
    for number, line in enumerate(lines):
        if _FAILURE_HINT.search(line):
            keep.update(range(max(0, number - 2), min(len(lines), number + 4)))
    if not keep:
        return tail(output, limit)
    chosen = sorted(keep)[:limit]
    out, previous = [], None
    for number in chosen:
        if previous is not None and number != previous + 1:
            out.append("  …")
        out.append(lines[number][:400])
        previous = number
    return "\n".join(out)


def failure_code(report: VerifyReport) -> str:
    """The error code of a verify that did not pass: the step that failed says whose fault it was."""
    failed = report.failed_step
    step = failed.step if failed else "test"
    return {"build": "build_failed", "smoke": "smoke_failed"}.get(step, "tests_failed")


def run_verify(
    sandbox, recipe: Recipe, *, timeout: Callable[[int], float], cancel=None, on_step=None,
    smoke: Callable[[], SmokeReport] | None = None,
) -> VerifyReport:  # fmt: skip
    """Run the recipe's build (if any) and test commands in the sandbox. `timeout(step_timeout)` returns
    the time that step may take (bounded by what is left of the build). When both pass, `smoke` (the
    browser check of what was built) runs as a last step named "smoke"; a skipped check passes."""
    report = VerifyReport(passed=True)
    steps = [("build", recipe.build), ("test", recipe.test)]
    for name, step in steps:
        if step is None:
            continue
        started = time.time()
        result = sandbox.run(["bash", "-c", step.command], timeout=timeout(step.timeout), cancel=cancel)
        outcome = StepResult(name, step.command, result.exit_code, result.duration, result.output, result.killed_reason)
        report.steps.append(outcome)
        if on_step:
            on_step(outcome)
        if name == "test":
            # Reports are read on the host, from the workspace the command ran in; see testreports.py.
            workspace = getattr(sandbox, "workspace", None)
            report.tests, report.summary = read_tests(
                result.output, step, workspace, since=started - REPORT_CLOCK_SLACK
            )
        if not outcome.ok:
            report.passed = False
            break
    if report.passed and smoke is not None:
        report.smoke = smoke()
        if not report.smoke.skipped:
            outcome = StepResult("smoke", "open the built pages in a browser", 0 if report.smoke.passed else 1,
                                 report.smoke.duration, report.smoke.for_model())  # fmt: skip
            report.steps.append(outcome)
            if on_step:
                on_step(outcome)
            report.passed = report.smoke.passed
    return report
