"""Verification: the recipe's own build and tests, run in the sandbox, read back in plain terms."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from agents.recipe import Recipe

_TAP = re.compile(r"^(?P<indent>\s*)(?P<status>not ok|ok) \d+ - (?P<name>.+?)(?:\s+# (?P<directive>\w+).*)?$")
_UNITTEST = re.compile(r"^(?P<name>\w+) \((?P<where>[\w.]+)\)(?: .*)? \.\.\. (?P<status>ok|FAIL|ERROR|skipped)")
_PYTEST = re.compile(r"^(?P<name>\S+::\S+) (?P<status>PASSED|FAILED|ERROR|SKIPPED)")
_FAILURE_HINT = re.compile(
    r"(not ok|FAIL|ERROR|Error|error:|Traceback|AssertionError|Expected|expected|actual|"
    r"\bat .*:\d+|File \".*\", line \d+|SyntaxError|Cannot find|No such file)"
)
EXCERPT_LINES = 60


@dataclass(frozen=True)
class TestCase:
    name: str
    passed: bool
    skipped: bool = False


@dataclass
class StepResult:
    step: str  # "build" or "test"
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

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)

    @property
    def counts(self) -> dict[str, int]:
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
        if failed.killed_reason == "timeout":
            return f"The {failed.step} step took too long and was stopped."
        if failed.step == "test" and counts["failed"]:
            return f"Tests failed: {counts['failed']} failed, {counts['passed']} passed."
        return f"The {failed.step} step failed (exit code {failed.exit_code})."

    def for_model(self) -> str:
        """What the agent reads: the headline and, on failure, only the lines that matter."""
        lines = [("PASSED: " if self.passed else "FAILED: ") + self.headline()]
        failed = self.failed_step
        if failed is not None:
            lines.append(f"$ {failed.command}")
            lines.append(failure_excerpt(failed.output))
        failing = [t.name for t in self.tests if not t.passed]
        if failing:
            lines.append("Failing tests: " + "; ".join(failing[:20]))
        return "\n".join(lines)

    def as_event(self) -> dict:
        return {
            "passed": self.passed,
            "headline": self.headline(),
            "counts": self.counts,
            "tests": [asdict(t) for t in self.tests[:500]],
            "steps": [
                {"step": s.step, "command": s.command, "exit_code": s.exit_code, "duration": round(s.duration, 2),
                 "killed_reason": s.killed_reason, "tail": tail(s.output, 40)}
                for s in self.steps
            ],
        }  # fmt: skip


def tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def parse_tests(output: str) -> list[TestCase]:
    """Test cases named in TAP (node --test), unittest -v or pytest -v output, in order, once each."""
    found: dict[str, TestCase] = {}
    for line in output.splitlines():
        match = _TAP.match(line)
        if match:
            name = match["name"].strip()
            skipped = (match["directive"] or "").upper() in {"SKIP", "TODO"}
            found[name] = TestCase(name, match["status"] == "ok", skipped)
            continue
        match = _UNITTEST.match(line)
        if match:
            name = f"{match['where'].rsplit('.', 1)[0]}.{match['name']}" if "." in match["where"] else match["name"]
            found[name] = TestCase(name, match["status"] in {"ok", "skipped"}, match["status"] == "skipped")
            continue
        match = _PYTEST.match(line)
        if match:
            status = match["status"]
            found[match["name"]] = TestCase(match["name"], status in {"PASSED", "SKIPPED"}, status == "SKIPPED")
    return list(found.values())


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


def run_verify(sandbox, recipe: Recipe, *, timeout: Callable[[int], float], cancel=None, on_step=None) -> VerifyReport:
    """Run the recipe's build (if any) and test commands in the sandbox. `timeout(step_timeout)` returns
    the time that step may take (bounded by what is left of the build)."""
    report = VerifyReport(passed=True)
    steps = [("build", recipe.build), ("test", recipe.test)]
    for name, step in steps:
        if step is None:
            continue
        result = sandbox.run(["bash", "-c", step.command], timeout=timeout(step.timeout), cancel=cancel)
        outcome = StepResult(name, step.command, result.exit_code, result.duration, result.output, result.killed_reason)
        report.steps.append(outcome)
        if on_step:
            on_step(outcome)
        if name == "test":
            report.tests = parse_tests(result.output)
        if not outcome.ok:
            report.passed = False
            break
    return report
