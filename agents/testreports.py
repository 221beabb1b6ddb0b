"""Test cases by name: read from the JUnit XML reports a runner writes, or from what it prints.

Everything read here was written by the code under test, which is untrusted. Reports are read on the
host, from the workspace, after the test command has ended: every path component is opened relative to
its parent with O_NOFOLLOW (a symlink, even one swapped in while we look, leads nowhere outside the
workspace), only regular files with a single link are read, the files, the directory entries looked at
and the bytes read are capped, and the XML is parsed with defusedxml, which refuses entity declarations
(billion laughs) and external references. The printed output is matched line by line with patterns
that stay linear; a recipe's own `pass`/`fail` patterns run with a time limit.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from xml.etree.ElementTree import ParseError

import regex
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MAX_REPORT_FILES = 200
MAX_REPORT_BYTES = 32 * 1024 * 1024  # all report files together
MAX_REPORT_FILE_BYTES = 8 * 1024 * 1024  # one report file; a bigger one is skipped
MAX_DIRECTORY_ENTRIES = 20_000  # looked at while matching the glob
MAX_TESTS = 5_000
MAX_NAME_CHARS = 300
PATTERN_SECONDS = 2.0  # for a recipe's pass/fail patterns over the whole output
PATTERN_LINE_CHARS = 2_000
# Only the start of each output line is looked at: enough for any name we keep, and it bounds the work of
# every pattern on a line the code under test made as long as it liked.
LINE_CHARS = 1_000
NOT_SEARCHED = {".git", "node_modules"}  # `**` never descends into these: no runner writes reports there


@dataclass(frozen=True)
class TestCase:
    name: str
    passed: bool
    skipped: bool = False

    __test__ = False  # not a pytest test class, whatever its name


# --- JUnit XML reports ------------------------------------------------------------------------------
def read_reports(workspace: Path, pattern: str, *, since: float = 0.0) -> list[TestCase]:
    """The test cases in the JUnit XML files matching `pattern` (a glob relative to `workspace`, `**`
    for any folders) that were modified at `since` or later, in file order; [] when there are none.
    Files that are not JUnit XML, are too big or cannot be read are skipped."""
    parts = [part for part in PurePosixPath(pattern).parts if part != "."]
    if not parts or PurePosixPath(pattern).is_absolute() or ".." in parts:
        return []
    try:
        root = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    found: dict[str, TestCase] = {}
    try:
        left = MAX_REPORT_BYTES
        for path in _matching_files(root, parts):
            data = _read_file(root, path, since=since, limit=min(MAX_REPORT_FILE_BYTES, left))
            if data is None:
                continue
            left -= len(data)
            for case in _junit_cases(data):
                found[case.name] = case
                if len(found) >= MAX_TESTS:
                    return list(found.values())
            if left <= 0:
                break
    finally:
        os.close(root)
    return list(found.values())


def _matching_files(root: int, parts: list[str]) -> list[tuple[str, ...]]:
    """Paths (as name tuples) of the regular files under the directory `root` matching the glob
    `parts`, without following symlinks; at most MAX_REPORT_FILES, in name order."""
    matches: dict[tuple[str, ...], None] = {}
    seen = 0

    def descend(parent: int, prefix: tuple[str, ...], name: str, rest: list[str]) -> None:
        try:
            directory = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError:  # gone, or replaced by a symlink since it was listed
            return
        try:
            visit(directory, (*prefix, name), rest)
        finally:
            os.close(directory)

    def visit(directory: int, prefix: tuple[str, ...], rest: list[str]) -> None:
        nonlocal seen
        head, tail = rest[0], rest[1:]
        if head == "**" and tail:
            visit(directory, prefix, tail)  # `**` may stand for no folder at all
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError:
            return
        for entry in entries:
            seen += 1
            if seen > MAX_DIRECTORY_ENTRIES or len(matches) >= MAX_REPORT_FILES:
                return
            if head == "**":
                if entry.name not in NOT_SEARCHED and entry.is_dir(follow_symlinks=False):
                    descend(directory, prefix, entry.name, rest)
            elif fnmatch.fnmatchcase(entry.name, head):
                if tail and entry.is_dir(follow_symlinks=False):
                    descend(directory, prefix, entry.name, tail)
                elif not tail and entry.is_file(follow_symlinks=False):
                    matches[(*prefix, entry.name)] = None

    visit(root, (), parts)
    return list(matches)


def _read_file(root: int, path: tuple[str, ...], *, since: float, limit: int) -> bytes | None:
    """The content of `path` under `root`, opened one component at a time without following links;
    None unless it is a regular file with one link, modified at `since` or later, of at most `limit`
    bytes. O_NONBLOCK: a FIFO swapped in after the listing must not block the worker."""
    opened: list[int] = []
    try:
        directory = root
        for name in path[:-1]:
            directory = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            opened.append(directory)
        handle = os.open(path[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
        opened.append(handle)
        info = os.fstat(handle)
        # A second link could be a file the sandbox can name but should not have us read for it.
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_mtime < since or info.st_size > limit:
            return None
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(handle, min(1024 * 1024, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        return None if size > limit else b"".join(chunks)
    except OSError:
        return None
    finally:
        for fd in reversed(opened):
            os.close(fd)


def _junit_cases(data: bytes) -> list[TestCase]:
    """<testcase> elements anywhere in the document: a <failure> or <error> child means failed (a
    surefire <flakyFailure> passed on a rerun), a <skipped> child skipped."""
    try:
        document = fromstring(data)
    except (ParseError, DefusedXmlException, ValueError):
        return []
    cases = []
    for case in document.iter("testcase"):
        name = _case_name(case.get("classname") or "", case.get("name") or "")
        if not name:
            continue
        children = {child.tag for child in case}
        failed = bool(children & {"failure", "error"})
        cases.append(TestCase(name, not failed, not failed and "skipped" in children))
    return cases


_CODE_PATH = re.compile(r"[\w$.]+")


def _case_name(classname: str, name: str) -> str:
    """`com.example.CalcTest.adds()` for Java and Python reports; a class name that is a file path or a
    sentence (vitest, jest-junit) is joined with " › "; jest-junit repeats it in the name by default."""
    classname, name = classname.strip(), name.strip()
    if not classname or name.startswith(classname):
        full = name or classname
    else:
        full = f"{classname}{'.' if _CODE_PATH.fullmatch(classname) else ' › '}{name}"
    return full[:MAX_NAME_CHARS]


# --- printed output ---------------------------------------------------------------------------------
_TAP = re.compile(r"^\s*(?P<status>not ok|ok) \d+ - (?P<rest>.+)$")  # "ok 3 - name # SKIP why"
_UNITTEST = re.compile(r"^(?P<name>\w+) \((?P<where>[\w.]+)\)(?: .*)? \.\.\. (?P<status>ok|FAIL|ERROR|skipped)")
_PYTEST = re.compile(r"^(?P<name>\S+) (?P<status>PASSED|FAILED|ERROR|SKIPPED)")  # a name with "::" in it
_GO = re.compile(r"^\s*--- (?P<status>PASS|FAIL|SKIP): (?P<name>\S+) \([\d.]+s\)")
_GRADLE_STATUSES = (" PASSED", " FAILED", " SKIPPED")  # "CalcTest > adds() PASSED", read without a regex
# jest's " PASS  src/sum.test.js (5.2 s)"; spaces only, so go's "FAIL<tab>example.com/calc" is not one
_FILE = re.compile(r"^ ?(?P<status>PASS|FAIL) +(?P<file>\S.*)$")
# vitest's " ✓ src/sum.test.ts (3 tests) 5ms", " ❯ src/sum.test.ts (3 tests | 1 failed) 7ms"
_VITEST_FILE = re.compile(r"^\s*[✓❯×↓]\s+\S+\s+\(\d+ tests?[ |)]")
_VITEST_START = re.compile(r"^\s*RUN\s+v\d")
_SUITE = re.compile(r"^(?P<indent> *)[❯▶]\s+(?P<title>\S.*)$")
# jest ✓ ✕ ○ ✎, vitest ✓ × ↓, mocha ✔ (✓ before v7, √ on Windows), node's spec reporter ✔ ✖ ﹣
_FAIL_MARKS = "✕✖×✗"
_MARKED = re.compile(r"^(?P<indent> *)(?P<mark>[✓✔√✕✖×✗○✎↓﹣])\s+(?P<title>\S.*)$")
_MOCHA_FAILED = re.compile(r"^(?P<indent> *)\d+\) (?P<title>\S.*)$")
_MOCHA_PENDING = re.compile(r"^(?P<indent> +)- (?P<title>\S.*)$")
_MOCHA_END = re.compile(r"^\s*\d+ passing \(\d+(?:\.\d+)?m?s\)\s*$")
_JEST_HEADING = re.compile(r"^\s*● (?P<name>\S.*)$")
_JEST_NOT_TESTS = ("Test suite failed to run", "Console")
# Searched, not matched at the start: each begins where a run of spaces begins, so that a line of many
# spaces costs one scan of them, not one per space.
_DIRECTIVE = re.compile(r"(?<!\s)\s+# (?P<directive>SKIP|TODO)\b.*$", re.IGNORECASE)
_PAREN_TIME = re.compile(r"(?<!\s)\s+\(\d+(?:\.\d+)?\s?m?s\)$")
_PAREN_COUNT = re.compile(r"(?<!\s)\s+\(\d+\)$")  # vitest's "suite (3)"
_BARE_TIME = re.compile(r"(?<!\s)\s+\d+(?:\.\d+)?m?s$")  # vitest only: "adds 2ms"
_JEST_PENDING = re.compile(r"^(?:skipped|todo) (?=\S)")
_JEST_SKIPPED_COUNT = re.compile(r"^skipped \d+ tests?$")  # jest's summed-up line, not a test

_GRADLE_SUMMARY = re.compile(r"^(?P<total>\d+) tests? completed, (?P<failed>\d+) failed(?:, (?P<skipped>\d+) skipped)?")
_SUMMARY_PART = re.compile(r"\b(?P<count>\d+) (?P<kind>passed|failed|skipped|todo)\b")


def parse_tests(output: str, *, pass_pattern: str = "", fail_pattern: str = "") -> list[TestCase]:
    """Test cases named in a runner's output, in order, once each (the last word on a name wins).

    With a recipe's `pass_pattern`/`fail_pattern`, only those are used. Otherwise the formats are
    recognised line by line: TAP (node --test), unittest -v, pytest -v, go test -v, gradle's test
    logging, and the default reporters of jest, vitest, mocha and node's spec reporter. A jest file
    whose tests were not listed one by one (several files, not --verbose) counts as one case named
    after the file, or as the failing tests its "●" headings name."""
    if pass_pattern or fail_pattern:
        return match_patterns(output, pass_pattern, fail_pattern)
    return _ConsoleReader(output).read()


def match_patterns(output: str, pass_pattern: str, fail_pattern: str) -> list[TestCase]:
    """Cases named by a recipe's line patterns (group `name`, or the first group); a line matching
    both is a failure. The patterns are the recipe's and the output is untrusted, so matching has a
    time budget: past it, the cases found so far are returned."""
    compiled = []
    for text, passed in ((fail_pattern, False), (pass_pattern, True)):
        try:
            if text:
                compiled.append((regex.compile(text), passed))
        except regex.error:  # the recipe check compiled it with `re`; the rare pattern only `re` takes is ignored
            continue
    deadline = time.monotonic() + PATTERN_SECONDS
    found: dict[str, TestCase] = {}
    for line in output.splitlines():
        line = line[:PATTERN_LINE_CHARS]
        for pattern, passed in compiled:
            try:
                match = pattern.search(line, timeout=max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                return list(found.values())
            if match:
                name = (match.group("name") if "name" in pattern.groupindex else match.group(1)) or ""
                name = name.strip()[:MAX_NAME_CHARS]
                if name:
                    found[name] = TestCase(name, passed)
                    if len(found) >= MAX_TESTS:
                        return list(found.values())
                break
    return list(found.values())


def parse_summary(output: str) -> dict[str, int] | None:
    """The counts a runner prints at the end, for runners that do not name every test: gradle
    ("5 tests completed, 1 failed", one per test task, added up), jest ("Tests: 1 failed, 4 passed,
    5 total") and vitest ("Tests  1 failed | 4 passed (5)"), whose last summary wins. None when
    there is none. Keys: passed, failed, skipped, total."""
    gradle: dict[str, int] | None = None
    last: dict[str, int] | None = None
    for line in output.splitlines():
        line = line[:LINE_CHARS]
        if match := _GRADLE_SUMMARY.match(line):
            total, failed, skipped = int(match["total"]), int(match["failed"]), int(match["skipped"] or 0)
            gradle = gradle or {"passed": 0, "failed": 0, "skipped": 0, "total": 0}
            gradle["failed"] += failed
            gradle["skipped"] += skipped
            gradle["total"] += total
            gradle["passed"] += max(total - failed - skipped, 0)
        elif counted := _summary_line(line):
            last = counted
    return last or gradle


def _summary_line(line: str) -> dict[str, int] | None:
    """jest's "Tests:       1 failed, 4 passed, 5 total" or vitest's "      Tests  1 failed | 4 passed (5)"."""
    text = line.strip()
    if line.startswith("Tests:") and text.endswith(" total"):
        parts, _, total = text[len("Tests:") : -len(" total")].rstrip().rpartition(" ")
    elif text.startswith("Tests ") and text.endswith(")") and text[len("Tests") :].lstrip()[:1].isdigit():
        parts, _, total = text[len("Tests") : -1].rpartition("(")
    else:
        return None
    if not total.isdigit():
        return None
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for part in _SUMMARY_PART.finditer(parts):
        counts["skipped" if part["kind"] == "todo" else part["kind"]] += int(part["count"])
    return {**counts, "total": int(total)}


def _gradle(line: str) -> tuple[str, str] | None:
    """(name, status) of a gradle test logging line, "Class > method() PASSED"."""
    line = line.rstrip()
    status = next((s for s in _GRADLE_STATUSES if line.endswith(s)), None)
    if status is None or line[:1].isspace() or " > " not in line:
        return None
    return line[: -len(status)].rstrip(), status.strip()


class _ConsoleReader:
    """One pass over the lines. Runners that print a tree (jest, mocha, node's spec reporter, nested
    vitest suites) name a test by the suite lines above it at a smaller indentation: `suites` holds
    (indentation, title) of the lines that may still be such ancestors."""

    def __init__(self, output: str) -> None:
        self.lines = output.splitlines()
        self.found: dict[str, TestCase] = {}
        self.suites: list[tuple[int, str]] = []
        self.vitest = False
        # mocha prints its failures again, numbered, after "N passing": read the tree above it only
        self.mocha_end = next((n for n, line in enumerate(self.lines) if _MOCHA_END.match(line)), None)
        self.tree_ended = False  # node's spec reporter repeats the failures after "✖ failing tests:"
        self.files: list[dict] = []  # jest files: name, passed, listed (tests seen), headings (● names)

    def read(self) -> list[TestCase]:
        for number, line in enumerate(self.lines):
            if len(self.found) >= MAX_TESTS:
                break
            self.line(number, line[:LINE_CHARS])
        for file in self.files:
            if file["listed"]:
                continue
            if file["headings"]:
                for name in file["headings"]:
                    self.add(name, passed=False)
            else:
                self.add(file["name"], passed=file["passed"])
        return list(self.found.values())

    def add(self, name: str, *, passed: bool, skipped: bool = False) -> None:
        name = name.strip()[:MAX_NAME_CHARS]
        if name:
            self.found[name] = TestCase(name, passed, skipped)

    def line(self, number: int, line: str) -> None:
        if match := _TAP.match(line):
            name, _, directive = match["rest"].partition(" # ")
            skipped = directive.split(" ", 1)[0].upper() in {"SKIP", "TODO"}
            self.add(name, passed=match["status"] == "ok", skipped=skipped)
        elif match := _UNITTEST.match(line):
            where = match["where"]
            name = f"{where.rsplit('.', 1)[0]}.{match['name']}" if "." in where else match["name"]
            self.add(name, passed=match["status"] in {"ok", "skipped"}, skipped=match["status"] == "skipped")
        elif (match := _PYTEST.match(line)) and "::" in match["name"][1:-1]:
            status = match["status"]
            self.add(match["name"], passed=status in {"PASSED", "SKIPPED"}, skipped=status == "SKIPPED")
        elif match := _GO.match(line):
            self.add(match["name"], passed=match["status"] != "FAIL", skipped=match["status"] == "SKIP")
        elif gradle := _gradle(line):
            name, status = gradle
            self.add(name, passed=status != "FAILED", skipped=status == "SKIPPED")
        elif not self.vitest and (match := _FILE.match(line)):  # vitest's "FAIL  file > test" repeats a failure
            file = _PAREN_TIME.sub("", match["file"].rstrip())
            self.files.append({"name": file, "passed": match["status"] == "PASS", "listed": False, "headings": []})
            self.suites = []
        elif _VITEST_START.match(line) or _VITEST_FILE.match(line):
            self.vitest = True
            self.suites = []
        elif match := _SUITE.match(line):
            title = _PAREN_COUNT.sub("", _PAREN_TIME.sub("", match["title"].rstrip()))
            self.suite(len(match["indent"]), title)
        elif not self.tree_ended and (match := _MARKED.match(line)):
            self.marked(len(match["indent"]), match["mark"], match["title"])
        elif self.in_mocha_tree(number) and (match := _MOCHA_FAILED.match(line) or _MOCHA_PENDING.match(line)):
            failed = match.re is _MOCHA_FAILED
            self.test(len(match["indent"]), match["title"], passed=not failed, skipped=not failed)
        elif match := _JEST_HEADING.match(line):
            if self.files and not match["name"].startswith(_JEST_NOT_TESTS):
                self.files[-1]["headings"].append(match["name"].rstrip())
        elif line.strip():
            indent = len(line) - len(line.lstrip(" "))
            if indent:
                self.suite(indent, line.strip())
            else:  # a line at the margin starts something else: nothing above it is a suite
                self.suites = []

    def in_mocha_tree(self, number: int) -> bool:
        return self.mocha_end is not None and number < self.mocha_end

    def suite(self, indent: int, title: str) -> None:
        self.suites = [(i, t) for i, t in self.suites if i < indent]
        self.suites.append((indent, title))

    def marked(self, indent: int, mark: str, title: str) -> None:
        title = title.rstrip()
        if mark == "✖" and title == "failing tests:":
            self.tree_ended = True
            return
        skipped = mark in "○✎↓﹣"
        if mark in "○✎":
            if _JEST_SKIPPED_COUNT.match(title):
                return
            title = _JEST_PENDING.sub("", title)
        directive = _DIRECTIVE.search(title)
        if directive:
            title, skipped = title[: directive.start()], True
        if (indent, _PAREN_TIME.sub("", title)) in self.suites:
            # node's spec reporter ends a suite it began with "▶ calc" by "✖ calc (2ms)" when one of its
            # tests failed: the suite's result, not one more test.
            self.suites = [(i, t) for i, t in self.suites if i < indent]
            return
        self.test(indent, title, passed=mark not in _FAIL_MARKS or skipped, skipped=skipped)

    def test(self, indent: int, title: str, *, passed: bool, skipped: bool) -> None:
        title = _PAREN_TIME.sub("", title.strip())
        if self.vitest:
            title = _BARE_TIME.sub("", title)
        self.suites = [(i, t) for i, t in self.suites if i < indent]
        if self.files:
            self.files[-1]["listed"] = True
        self.add(" › ".join([*(t for _, t in self.suites), title]), passed=passed, skipped=skipped)
