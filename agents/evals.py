"""`python -m agents eval SUITE`: run a suite of ideas against real repositories and measure the engine.

A suite is a YAML file (examples/evals/examples.yaml is the one for the example targets):

    targets:                        # name -> a folder (relative to the suite file) or a git URL; a plain
      web-player: ../targets/web-player   # folder becomes a one-commit repository (commit_folder)
    cases:
      - name: dark-mode
        target: web-player
        idea: Add a dark mode toggle
        attempts: 1                 # optional: several builds of the idea, the judge picks one
        checks:                     # what must hold afterwards
          - command: node --test    # runs in the sandbox, without network, on the result commit
            timeout: 120            # optional, seconds
          - file: src/theme.js      # exists in the result commit
            contains: localStorage  # optional
          - page: /                 # a page the browser check visited (the recipe's [check] paths)
            text: Dark mode         # text shown on it

Each case is a real engine build (`agents.build`), exactly as `python -m agents build` runs one; the
checks then run against what it produced. A case passes when its build succeeded and every check
held. The run prints, per case and in total, the success rate, the cost per success, wall time, turns,
and how often the judge agreed with the checks, and stores all of it as JSON under
`<results>/<model>/<date>T<time>.json` so that a later run (another model, another day) can be put
side by side with `--compare`.

Without ANTHROPIC_API_KEY the builds replay the hand-written sample conversations of
examples/recordings: the numbers then measure the pipeline (tools, sandbox, verify, packaging, the
checks), not Claude, and the run says so first. A case whose idea has no sample is skipped, not failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import TextIO

import yaml

from agents import deplayer
from agents import workspace as git
from agents.cli import (
    RECORDINGS,
    default_cache,
    default_judge,
    default_model,
    default_provider,
    looks_like_git_url,
    mirror_for,
    provider_config,
    safe_name,
)
from agents.engine import build, load_recipe, open_sandbox
from agents.errors import BuildError
from agents.judge import rank
from agents.providers.replay import find_recording
from agents.sandbox import SandboxError
from agents.spec import BuildResult, BuildSpec

REPLAY_NOTICE = "sample conversations, not a model: the numbers measure the pipeline, not Claude"
RESULTS_FORMAT = 1
MAX_ATTEMPTS = 10
DEFAULT_CHECK_TIMEOUT = 120.0
MAX_CHECK_TIMEOUT = 1800.0
NOTE_CHARS = 1500  # of a failing command's output kept in the results


# --- the suite file -------------------------------------------------------------------------------


class SuiteError(Exception):
    """A suite that cannot run. The message lists every mistake found, each with its line."""


@dataclass(frozen=True)
class Check:
    kind: str  # command | file | page
    line: int
    name: str = ""  # what the check shows, in words (optional)
    command: str = ""
    timeout: float = DEFAULT_CHECK_TIMEOUT
    file: str = ""
    contains: str | None = None
    page: str = ""
    text: str = ""

    def describe(self) -> str:
        if self.name:
            return self.name
        if self.kind == "command":
            first = self.command.strip().splitlines()[0]
            return f"command: {first}" + (" …" if "\n" in self.command.strip() else "")
        if self.kind == "file":
            return f"file: {self.file}" + (f" contains {self.contains!r}" if self.contains is not None else "")
        return f"page: {self.page} shows {self.text!r}"


@dataclass(frozen=True)
class Case:
    name: str
    target: str
    idea: str
    checks: tuple[Check, ...]
    attempts: int = 1
    line: int = 0


@dataclass(frozen=True)
class Suite:
    path: Path
    targets: dict[str, str]  # name -> an absolute folder, or a git URL
    cases: tuple[Case, ...]

    @property
    def name(self) -> str:
        return self.path.stem


class _Mapping(dict):
    """A YAML mapping that remembers its line and each key's line, for messages that say where."""

    line = 0
    lines: dict


class _SuiteLoader(yaml.SafeLoader):
    def construct_located_mapping(self, node: yaml.MappingNode) -> _Mapping:
        self.flatten_mapping(node)
        mapping = _Mapping()
        mapping.line = node.start_mark.line + 1
        mapping.lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is not a word", key_node.start_mark
                )
            if key in mapping:
                # PyYAML keeps the last of two equal keys without a word; a suite that says a thing twice
                # is a mistake to point at.
                raise yaml.constructor.ConstructorError(None, None, f"'{key}' is given twice", key_node.start_mark)
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.lines[key] = key_node.start_mark.line + 1
        return mapping


_SuiteLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _SuiteLoader.construct_located_mapping)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CASE_KEYS = ("name", "target", "idea", "attempts", "checks")
CHECK_KEYS = {"command": ("timeout", "name"), "file": ("contains", "name"), "page": ("text", "name")}


class _Problems:
    def __init__(self, file: str):
        self.file = file
        self.found: list[str] = []

    def add(self, line: int, where: str, message: str) -> None:
        self.found.append(f"{self.file} line {line}: {where}{': ' if where else ''}{message}")


def _words(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def load_suite(path: Path) -> Suite:
    """Read and check a suite file. Raises SuiteError listing every mistake with its line and key."""
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteError(f"cannot read the suite {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{path.name} is not a text file") from None
    try:
        data = yaml.load(text, Loader=_SuiteLoader)  # noqa: S506 - a SafeLoader that also records lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{path.name}{where}: this is not valid YAML ({problem})") from None
    problems = _Problems(path.name)
    if not isinstance(data, _Mapping):
        raise SuiteError(f"{path.name}: a suite is a mapping with 'targets' and 'cases' (see agents/evals.py)")
    for key in data:
        if key not in ("targets", "cases"):
            problems.add(data.lines[key], key, "unknown key; a suite has 'targets' and 'cases'")
    targets = _targets(data, path.parent, problems)
    # Cases are checked against the targets the file names, found or not: one mistake, one message.
    declared = list(data["targets"]) if isinstance(data.get("targets"), dict) else []
    cases = _cases(data, declared, problems)
    if problems.found:
        raise SuiteError("\n".join(problems.found))
    return Suite(path=path, targets=targets, cases=tuple(cases))


def _targets(data: _Mapping, folder: Path, problems: _Problems) -> dict[str, str]:
    raw = data.get("targets")
    if not isinstance(raw, _Mapping) or not raw:
        problems.add(data.lines.get("targets", data.line), "targets",
                     "needs one or more 'name: folder or git URL' lines")  # fmt: skip
        return {}
    targets = {}
    for name, where in raw.items():
        line = raw.lines[name]
        if not NAME.match(name):
            problems.add(line, f"targets.{name}", "a target's name is letters, digits, - and _")
        if not _words(where):
            problems.add(line, f"targets.{name}", "give the target's folder (relative to this file) or git URL")
            continue
        local = (folder / Path(where).expanduser()).resolve()
        if local.is_dir():
            targets[name] = str(local)
        elif looks_like_git_url(where):
            targets[name] = where
        else:
            problems.add(line, f"targets.{name}", f"there is no folder {local}")
    return targets


def _cases(data: _Mapping, targets: list[str], problems: _Problems) -> list[Case]:
    raw = data.get("cases")
    if not isinstance(raw, list) or not raw:
        problems.add(data.lines.get("cases", data.line), "cases", "needs a list of one or more cases")
        return []
    cases: list[Case] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"cases[{index}]"
        if not isinstance(item, _Mapping):
            problems.add(data.lines["cases"], where, "a case is a mapping with name, target, idea and checks")
            continue
        name = item.get("name")
        if isinstance(name, str):
            where = f"cases[{index}] ({name})"
        for key in item:
            if key not in CASE_KEYS:
                problems.add(item.lines[key], f"{where}.{key}", f"unknown key; a case has {', '.join(CASE_KEYS)}")
        for key in ("name", "target", "idea", "checks"):
            if key not in item:
                problems.add(item.line, where, f"'{key}' is missing")
        if "name" in item:
            if not isinstance(name, str) or not NAME.match(name):
                problems.add(item.lines["name"], f"{where}.name", "a case's name is letters, digits, - and _")
            elif name in seen:
                problems.add(item.lines["name"], f"{where}.name", f"another case is already called '{name}'")
            seen.add(str(name))
        target = item.get("target")
        if "target" in item and target not in targets:
            known = ", ".join(targets) or "none"
            problems.add(item.lines["target"], f"{where}.target", f"'{target}' is not one of the targets ({known})")
        idea = item.get("idea")
        if "idea" in item and not _words(idea):
            problems.add(item.lines["idea"], f"{where}.idea", "write the idea in words")
        attempts = item.get("attempts", 1)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_ATTEMPTS:
            problems.add(item.lines.get("attempts", item.line), f"{where}.attempts",
                         f"a whole number from 1 to {MAX_ATTEMPTS}")  # fmt: skip
            attempts = 1
        checks = _checks(item, where, problems) if "checks" in item else []
        if isinstance(name, str) and isinstance(target, str) and _words(idea):
            cases.append(Case(name=name, target=target, idea=idea.strip(), checks=tuple(checks),
                              attempts=attempts, line=item.line))  # fmt: skip
    return cases


def _checks(item: _Mapping, where: str, problems: _Problems) -> list[Check]:
    raw = item["checks"]
    if not isinstance(raw, list) or not raw:
        problems.add(item.lines["checks"], f"{where}.checks", "needs a list of one or more checks")
        return []
    checks = []
    for index, entry in enumerate(raw):
        at = f"{where}.checks[{index}]"
        if not isinstance(entry, _Mapping):
            problems.add(item.lines["checks"], at, "a check is a mapping: command, file or page")
            continue
        kinds = [k for k in CHECK_KEYS if k in entry]
        if len(kinds) != 1:
            problems.add(entry.line, at, "a check has exactly one of 'command', 'file' or 'page'")
            continue
        kind = kinds[0]
        for key in entry:
            if key != kind and key not in CHECK_KEYS[kind]:
                allowed = " or ".join(f"'{k}'" for k in CHECK_KEYS[kind])
                problems.add(entry.lines[key], f"{at}.{key}", f"unknown key; a {kind} check may also have {allowed}")
        value = entry[kind]
        line = entry.lines[kind]
        if not isinstance(value, str) and value is not None:
            # `command: true` reads as the value True, not as the command `true`.
            problems.add(line, f"{at}.{kind}", f"YAML reads this as {value!r}: write it in quotes")
            continue
        if not _words(value):
            problems.add(line, f"{at}.{kind}", "needs a value")
            continue
        label = entry.get("name", "")
        if "name" in entry and not _words(label):
            problems.add(entry.lines["name"], f"{at}.name", "says in words what the check shows")
            continue
        if kind == "command":
            timeout = entry.get("timeout", DEFAULT_CHECK_TIMEOUT)
            if (
                isinstance(timeout, bool)
                or not isinstance(timeout, int | float)
                or not 0 < timeout <= MAX_CHECK_TIMEOUT
            ):
                problems.add(entry.lines.get("timeout", line), f"{at}.timeout",
                             f"seconds, more than 0 and at most {MAX_CHECK_TIMEOUT:.0f}")  # fmt: skip
                continue
            checks.append(Check("command", line, label, command=value, timeout=float(timeout)))
        elif kind == "file":
            relative = PurePosixPath(value)
            if relative.is_absolute() or ".." in relative.parts or str(relative) in ("", "."):
                problems.add(line, f"{at}.file", "a path inside the repository, like src/theme.js")
                continue
            contains = entry.get("contains")
            if "contains" in entry and not isinstance(contains, str | int | float):
                problems.add(entry.lines["contains"], f"{at}.contains", "the text the file must contain")
                continue
            contains = None if contains is None else str(contains)
            checks.append(Check("file", line, label, file=str(relative), contains=contains))
        else:
            if not value.startswith("/"):
                problems.add(line, f"{at}.page", "a path of the app starting with /, like /")
                continue
            text = entry.get("text")
            if not _words(text) and not isinstance(text, int | float):
                problems.add(entry.lines.get("text", line), f"{at}.text", "the text the page must show")
                continue
            checks.append(Check("page", line, label, page=value, text=str(text)))
    return checks


# --- running one case -----------------------------------------------------------------------------


class EventLog:
    """The engine's sink for an eval: every event of a build as a JSON line in a file (read it when a
    case fails), nothing printed, never cancelled."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.handle = path.open("w")

    def emit(self, kind: str, data: dict) -> None:
        self.handle.write(json.dumps({"kind": kind, **data}, default=str) + "\n")

    def stage(self, name: str) -> None:
        self.emit("stage", {"stage": name})

    def cancelled(self) -> bool:
        return False

    def close(self) -> None:
        self.handle.close()


@dataclass(frozen=True)
class Settings:
    """How an eval runs, from the command line."""

    provider: str
    model: str
    cache: Path
    recordings: Path | None
    sandbox: str = "bwrap"
    toolchain_root: Path | None = None
    ro_binds: tuple[str, ...] = ()
    judge: bool = True

    @property
    def replayed(self) -> bool:
        return self.provider == "replay"


def commit_folder(folder: Path, into: Path) -> Path:
    """A git repository at `into` holding a copy of `folder` (a plain folder, like the example targets)
    in one commit on branch main. Author and dates are fixed, so the same files always make the same
    commit: the cached mirror and its dependency layers stay valid from one eval to the next."""
    shutil.copytree(folder, into, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    when = "2000-01-01T00:00:00Z"
    env = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    git.git("init", "--quiet", "--initial-branch=main", str(into))
    work = ["--git-dir", str(into / ".git"), "--work-tree", str(into)]
    git.git(*work, "add", "--all", env=env)
    git.git(*work, "commit", "--quiet", "--no-verify", "-m", f"{folder.name} as it is", env=env)
    return into


def is_git_repository(folder: Path) -> bool:
    return (folder / ".git").exists() or ((folder / "HEAD").is_file() and (folder / "objects").is_dir())


class Eval:
    """Runs the cases of one suite, one build at a time, in a scratch folder removed at the end."""

    def __init__(self, suite: Suite, settings: Settings, *, stamp: str, events_dir: Path):
        self.suite = suite
        self.settings = settings
        self.stamp = stamp
        self.events_dir = events_dir
        self.scratch = Path(tempfile.mkdtemp(prefix="agents-eval-"))
        self.scratch.chmod(0o711)  # the sandbox's unprivileged user must reach the workspaces inside
        self._repos: dict[str, tuple[str, Path]] = {}

    def close(self) -> None:
        git.remove_tree(self.scratch)

    def repository(self, target: str) -> tuple[str, Path]:
        """The target's repository URL for the build and its mirror in the cache. A plain folder becomes a
        git repository first (a copy in the scratch folder); its mirror is named after the folder, not the
        copy, so it is the same mirror every run."""
        if target not in self._repos:
            where = self.suite.targets[target]
            url = where
            if not looks_like_git_url(where) and not is_git_repository(Path(where)):
                url = str(commit_folder(Path(where), self.scratch / "repos" / safe_name(target)))
            mirror = mirror_for(self.settings.cache, where, target)
            mirror.parent.mkdir(parents=True, exist_ok=True)
            self._repos[target] = (url, mirror)
        return self._repos[target]

    def spec(self, case: Case, attempt: int) -> BuildSpec:
        url, mirror = self.repository(case.target)
        folder = self.scratch / safe_name(case.name) / str(attempt)
        (folder / "out").mkdir(parents=True)
        folder.chmod(0o711)
        key = os.environ.get("ANTHROPIC_API_KEY", "")
        return BuildSpec(
            target=case.target, repo_url=url, base_ref="HEAD", idea=case.idea, mirror=mirror,
            work_dir=folder / "build", output_dir=folder / "out",
            result_ref=f"refs/prototypes/eval-{safe_name(case.name)}/{self.stamp}-{attempt}",
            provider=provider_config(self.settings.provider, self.settings.model, self.settings.recordings),
            sandbox=self.settings.sandbox, sandbox_ro_binds=self.settings.ro_binds,
            toolchain_root=self.settings.toolchain_root, secrets=(key,), judge=self.settings.judge,
        )  # fmt: skip

    def run_case(self, case: Case) -> dict:
        started = time.monotonic()
        record = {"name": case.name, "target": case.target, "idea": case.idea, "attempts": case.attempts}
        if self.settings.replayed and find_recording(self.settings.recordings, case.target, case.idea) is None:
            return {**record, "status": "skipped", "reason": "no sample conversation for this idea",
                    "attempts_run": 0, "seconds": 0.0, "turns": 0, "cost": "0", "tokens": 0, "checks": [],
                    "judge": {}, "judge_agreed": None}  # fmt: skip
        results: list[tuple[BuildSpec, BuildResult, Path]] = []
        for attempt in range(1, case.attempts + 1):
            spec = self.spec(case, attempt)
            events = self.events_dir / f"{safe_name(case.name)}-{attempt}.jsonl"
            sink = EventLog(events)
            try:
                results.append((spec, build(spec, sink), events))
            finally:
                sink.close()
        picked = pick([result for _, result, _ in results])
        spec, result, events = results[picked]
        checks = run_checks(case.checks, spec, result, self.scratch / safe_name(case.name) / "checks")
        held = bool(checks) and all(c["passed"] for c in checks)
        judge = dict(result.judge or {})
        agreed = None
        if judge and result.result_commit:  # the checks ran on the result the judge graded
            agreed = bool(judge.get("accepted")) == held
        if result.ok and held:
            status, reason = "passed", ""
        elif not result.ok:
            status, reason = "failed", _build_failure(result)
        else:
            failed = sum(not c["passed"] for c in checks)
            status, reason = "failed", f"{failed} of {len(checks)} checks did not hold"
        all_results = [r for _, r, _ in results]
        return {
            **record,
            "status": status,
            "reason": reason,
            "attempts_run": len(results),
            "picked": picked + 1,
            "seconds": round(time.monotonic() - started, 1),
            "turns": sum(r.turns for r in all_results),
            "cost": str(sum((r.cost for r in all_results), Decimal(0))),
            "tokens": sum(r.usage.total for r in all_results),
            "error": result.error.code if result.error else "",
            "result_commit": result.result_commit,
            "result_ref": spec.result_ref if result.result_commit else "",
            "smoke": _smoke_summary(result.smoke),
            "checks": checks,
            "judge": judge,
            "judge_agreed": agreed,
            "events": str(events),
        }


def _build_failure(result: BuildResult) -> str:
    if result.cancelled:
        return "the build was cancelled"
    if result.error is None:
        return "the build produced no artifact"
    detail = result.error.detail.strip()
    return f"the build failed ({result.error.code})" + (f": {detail.splitlines()[0][:300]}" if detail else "")


def _smoke_summary(smoke: dict) -> dict:
    """What the results keep of the browser check: whether it passed, or why it did not run."""
    return {"passed": smoke.get("passed"), "skipped": smoke.get("skipped", "")} if smoke else {}


def pick(results: list[BuildResult]) -> int:
    """Which of several attempts of one idea is checked: the one the judge ranks first (as the store
    keeps it), so the checks measure what a maker would get, never the best by the checks themselves."""
    return rank(results)[0]


# --- the checks -----------------------------------------------------------------------------------


def run_checks(checks: tuple[Check, ...], spec: BuildSpec, result: BuildResult, scratch: Path) -> list[dict]:
    """Every check of a case against the build's result: file checks read the result commit in the
    mirror, page checks the build's browser check, command checks run in the sandbox on a checkout of
    the result commit. Nothing is checked when the build left no result."""
    if not result.ok or not result.result_commit:
        return [_outcome(c, False, "not checked: the build did not finish", 0.0) for c in checks]
    done: dict[int, dict] = {}
    for index, check in enumerate(checks):
        if check.kind == "file":
            done[index] = check_file(check, spec.mirror, result.result_commit)
        elif check.kind == "page":
            done[index] = check_page(check, result.smoke)
    # The commands share one checkout and one sandbox, made only when a case has commands to run.
    positions = [index for index, check in enumerate(checks) if check.kind == "command"]
    if positions:
        outcomes = check_commands([checks[index] for index in positions], spec, result, scratch)
        done.update(zip(positions, outcomes, strict=True))
    return [done[index] for index in range(len(checks))]


def _outcome(check: Check, passed: bool, note: str, seconds: float) -> dict:
    return {"check": check.describe(), "kind": check.kind, "passed": passed, "note": note,
            "seconds": round(seconds, 2)}  # fmt: skip


def check_file(check: Check, mirror: Path, commit: str) -> dict:
    started = time.monotonic()
    kind = git.git("cat-file", "-t", f"{commit}:{check.file}", git_dir=mirror, check=False).strip()
    if kind != "blob":
        note = f"{check.file} is a folder, not a file" if kind == "tree" else f"there is no file {check.file}"
        return _outcome(check, False, note, time.monotonic() - started)
    if check.contains is None:
        return _outcome(check, True, "", time.monotonic() - started)
    text = git.read_file(mirror, commit, check.file) or ""
    passed = check.contains in text
    note = "" if passed else f"{check.file} does not contain {check.contains!r}"
    return _outcome(check, passed, note, time.monotonic() - started)


def _spaces(text: str) -> str:
    return " ".join(text.split())


def check_page(check: Check, smoke: dict) -> dict:
    """The page's visible text as the build's browser check saw it (BuildResult.smoke, the shape of
    agents.browser.SmokeReport.as_event()). Spaces and line breaks count as one space."""
    if not smoke:
        return _outcome(check, False, "the browser check did not run for this build", 0.0)
    if smoke.get("skipped"):
        return _outcome(check, False, f"the browser check did not run: {smoke['skipped']}", 0.0)
    pages = [p for p in smoke.get("pages") or [] if p.get("path") == check.page]
    if not pages:
        visited = ", ".join(str(p.get("path")) for p in smoke.get("pages") or []) or "none"
        return _outcome(check, False, f"the browser check did not visit {check.page} (it visited: {visited}); "
                        "list it in the recipe's [check] paths", 0.0)  # fmt: skip
    if any(_spaces(check.text) in _spaces(p.get("text") or "") for p in pages):
        return _outcome(check, True, "", 0.0)
    return _outcome(check, False, f"{check.page} does not show {check.text!r}", 0.0)


def check_commands(checks: list[Check], spec: BuildSpec, result: BuildResult, scratch: Path) -> list[dict]:
    """Run the command checks one after the other in the build's kind of sandbox (the recipe pinned from
    the base commit, its toolchains and services, the dependency layer its setup stored, no network) on
    a fresh checkout of the result commit. A command passes when it exits with 0 within its timeout."""
    if scratch.exists():
        git.close_workspace(scratch / "ws")
        git.remove_tree(scratch)
    scratch.mkdir(parents=True)
    scratch.chmod(0o711)
    check_spec = dataclasses.replace(spec, work_dir=scratch)  # the services' data folder goes in here
    outcomes: list[dict] = []
    try:
        recipe = load_recipe(spec, spec.mirror, result.base_commit)
        deps = deplayer.find_layer(spec.mirror, result.base_commit, recipe,
                                   scope=deplayer.scope_for(spec.start_commit, spec.result_ref))  # fmt: skip
        hit = deps if deps is not None and deps.hit is not None else None
        missing = ""
        if deps is not None and hit is None:
            missing = " (the recipe's setup left no stored dependencies for this commit, so none were there)"
        workspace = git.prepare_workspace(
            spec.mirror, result.result_commit, scratch / "ws",
            deps=hit.tree if hit else None, deps_lease=hit.take_lease() if hit else None,
        )  # fmt: skip
        sandbox, _ = open_sandbox(check_spec, recipe, workspace)
        for check in checks:
            outcome = sandbox.run(["bash", "-c", check.command], timeout=check.timeout, network=False)
            passed = outcome.exit_code == 0 and outcome.killed_reason is None
            note = ""
            if not passed:
                why = (f"stopped after {check.timeout:.0f} s" if outcome.killed_reason == "timeout"
                       else f"exited with {outcome.exit_code}")  # fmt: skip
                note = f"{why}{missing}:\n{outcome.output[-NOTE_CHARS:].strip()}"
            outcomes.append(_outcome(check, passed, note, outcome.duration))
    except (BuildError, SandboxError) as exc:
        message = exc.detail if isinstance(exc, BuildError) else str(exc)
        outcomes += [_outcome(c, False, f"could not run: {message}", 0.0) for c in checks[len(outcomes) :]]
    finally:
        git.close_workspace(scratch / "ws")
        git.remove_tree(scratch)
    return outcomes


# --- totals, the results file and comparing runs --------------------------------------------------


def totals(cases: list[dict]) -> dict:
    """What a run adds up to. Skipped cases are left out of every rate. The cost per success is all that
    was spent, failures included, divided by the cases that passed: what one working prototype costs."""
    ran = [c for c in cases if c["status"] != "skipped"]
    passed = [c for c in ran if c["status"] == "passed"]
    cost = sum((Decimal(c["cost"]) for c in ran), Decimal(0))
    judged = [c for c in ran if c.get("judge_agreed") is not None]
    seconds = sum(c["seconds"] for c in ran)
    turns = sum(c["turns"] for c in ran)
    return {
        "cases": len(cases),
        "ran": len(ran),
        "passed": len(passed),
        "failed": len(ran) - len(passed),
        "skipped": len(cases) - len(ran),
        "success_rate": len(passed) / len(ran) if ran else None,
        "cost": str(cost),
        "cost_per_success": str(cost / len(passed)) if passed else None,
        "seconds": round(seconds, 1),
        "seconds_per_case": round(seconds / len(ran), 1) if ran else None,
        "turns": turns,
        "turns_per_case": round(turns / len(ran), 1) if ran else None,
        "judged": len(judged),
        "judge_agreed": sum(1 for c in judged if c["judge_agreed"]),
    }


def results_file(results: Path, model_dir: str, started: datetime) -> Path:
    """<results>/<model>/<YYYY-MM-DD>T<HHMMSS>.json, with -2, -3 … when two runs start in one second."""
    folder = results / safe_name(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    base = started.strftime("%Y-%m-%dT%H%M%S")
    path = folder / f"{base}.json"
    n = 2
    while path.exists():
        path = folder / f"{base}-{n}.json"
        n += 1
    return path


def load_run(path: Path) -> dict:
    data = json.loads(path.read_text())
    if data.get("format") != RESULTS_FORMAT or not isinstance(data.get("cases"), list):
        raise ValueError(f"{path} is not the results of an eval")
    return data


def stored_runs(results: Path, suite: str) -> list[tuple[Path, dict]]:
    """The runs of `suite` kept under `results`, oldest first."""
    runs = []
    for path in results.glob("*/*.json"):
        try:
            data = load_run(path)
        except (OSError, ValueError):
            continue
        if data.get("suite") == suite:
            runs.append((path, data))
    return sorted(runs, key=lambda run: (run[1].get("started", ""), str(run[0])))


def find_run(wanted: str, results: Path, suite: str) -> tuple[Path, dict]:
    """The run `--compare` names: a results file, a model (its latest run of this suite), or "previous"
    (the latest run of this suite, whatever its model). Raises ValueError saying why not."""
    if wanted.endswith(".json") or "/" in wanted:
        path = Path(wanted).expanduser().resolve()
        try:
            return path, load_run(path)
        except OSError as exc:
            raise ValueError(f"--compare: cannot read {path}: {exc.strerror}") from None
        except ValueError:  # not JSON, or not an eval's
            raise ValueError(f"--compare: {path} is not the results of an eval") from None
    runs = stored_runs(results, suite)
    if wanted != "previous":
        runs = [(p, d) for p, d in runs if p.parent.name == safe_name(wanted)]
    if not runs:
        whose = "" if wanted == "previous" else f" of {wanted}"
        raise ValueError(f"--compare: no earlier run{whose} of the suite {suite} is kept in {results}")
    return runs[-1]


# --- what the person reads ------------------------------------------------------------------------


def _money(value: str | None, replayed: bool) -> str:
    if value is None:
        return "none passed"
    amount = Decimal(value)
    text = f"${amount:.4f}" if 0 < amount < Decimal("0.01") else f"${amount:.2f}"
    return text + (" (replayed: nothing spent)" if replayed and amount == 0 else "")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} s" if value < 90 else f"{int(value // 60)} min {value % 60:.0f} s"


def _rate(total: dict) -> str:
    if total["success_rate"] is None:
        return "-"
    return f"{total['success_rate']:.0%} ({total['passed']} of {total['ran']})"


def _agreement(total: dict) -> str:
    if not total["judged"]:
        return "no judge"
    return f"{total['judge_agreed']} of {total['judged']}"


def case_line(case: dict) -> str:
    if case["status"] == "skipped":
        return f"{case['name']} ({case['target']}): skipped, {case['reason']}"
    held = sum(c["passed"] for c in case["checks"])
    judge = case.get("judge") or {}
    if not judge:
        verdict = "no judge"
    elif case.get("judge_agreed") is None:
        verdict = "judge " + ("accepted" if judge.get("accepted") else "rejected") + ", nothing to compare"
    else:
        verdict = "judge agreed" if case["judge_agreed"] else "judge disagreed"
        verdict += " (sample review)" if judge.get("replayed") else ""
    attempts = f", {case['attempts_run']} attempts (checked #{case['picked']})" if case["attempts_run"] > 1 else ""
    text = (f"{case['name']} ({case['target']}): {case['status']}, {held} of {len(case['checks'])} checks held, "
            f"{_seconds(case['seconds'])}, {case['turns']} turns, {_money(case['cost'], False)}{attempts}, {verdict}")  # fmt: skip
    return text + (f"\n  {case['reason']}" if case["reason"] else "")


def print_case(case: dict, out: TextIO) -> None:
    print(case_line(case), file=out, flush=True)
    for check in case["checks"]:
        mark = "held" if check["passed"] else "FAILED"
        print(f"  {mark}: {check['check']}", file=out)
        if check["note"] and not check["passed"]:
            for line in check["note"].splitlines()[-12:]:
                print(f"    {line}", file=out)
    if case["status"] == "failed" and case.get("events"):
        print(f"  the build's events: {case['events']}", file=out)
    out.flush()


def print_totals(run: dict, out: TextIO) -> None:
    total = run["totals"]
    replayed = run["replayed"]
    print(f"\n{total['cases']} cases: {total['passed']} passed, {total['failed']} failed, "
          f"{total['skipped']} skipped", file=out)  # fmt: skip
    print(f"success rate: {_rate(total)}", file=out)
    print(f"cost per success: {_money(total['cost_per_success'], replayed)}", file=out)
    print(f"time: {_seconds(total['seconds'])} in all, {_seconds(total['seconds_per_case'])} per case", file=out)
    per_case = "-" if total["turns_per_case"] is None else f"{total['turns_per_case']:g}"
    print(f"turns: {total['turns']} in all, {per_case} per case", file=out)
    agreed = _agreement(total)
    print("judge agreed with the checks: " + (agreed if agreed == "no judge" else f"{agreed} cases"), file=out)
    out.flush()


def print_comparison(run: dict, other: dict, other_path: Path, out: TextIO) -> None:
    """This run beside another, over the cases both have, so a subset run compares fairly."""
    names = [c["name"] for c in run["cases"]]
    theirs = {c["name"]: c for c in other["cases"]}
    common = [n for n in names if n in theirs]
    mine = totals([c for c in run["cases"] if c["name"] in theirs])
    them = totals([theirs[n] for n in common])
    label = f"{other.get('model_dir', '?')} {other.get('started', '')[:16]}"
    print(f"\ncompared with {label} ({other_path}), over the {len(common)} cases both runs have:", file=out)
    if other.get("replayed") != run.get("replayed"):
        print("  note: one of the two runs replayed sample conversations; its numbers are not Claude's", file=out)
    rows = [
        ("", "this run", label),
        ("success rate", _rate(mine), _rate(them)),
        ("cost per success", _money(mine["cost_per_success"], False), _money(them["cost_per_success"], False)),
        ("time per case", _seconds(mine["seconds_per_case"]), _seconds(them["seconds_per_case"])),
        ("turns per case", f"{mine['turns_per_case']}", f"{them['turns_per_case']}"),
        ("judge agreed", _agreement(mine), _agreement(them)),
    ]
    for name in common:
        ours = next(c for c in run["cases"] if c["name"] == name)
        rows.append((name, _status(ours), _status(theirs[name])))
    width = max(len(r[0]) for r in rows) + 2
    middle = max(len(r[1]) for r in rows) + 2
    for first, second, third in rows:
        print(f"  {first:<{width}}{second:<{middle}}{third}", file=out)
    out.flush()


def _status(case: dict) -> str:
    if case["status"] != "failed":
        return case["status"]
    return f"failed ({case['error']})" if case.get("error") else "failed (checks)"


# --- the command ----------------------------------------------------------------------------------

EVAL_HELP = f"""\
Run a suite of ideas against their targets, each as a real build (like `python -m agents build`), then
check the results: commands run in the sandbox without network, files in the result commit, text on
pages the browser check visited. Prints per case and in total the success rate, the cost per success,
time, turns and how often the judge agreed with the checks, and keeps the numbers in
RESULTS/<model>/<date>T<time>.json to compare with later runs (--compare).

Without ANTHROPIC_API_KEY the builds replay the hand-written sample conversations of
examples/recordings: {REPLAY_NOTICE}.
Cases whose idea has no sample are skipped. Exit status: 0 when every case that ran passed, 1 when one
failed, 2 when the suite or the options have mistakes.
"""


def default_results() -> Path:
    return default_cache() / "evals"


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agents eval", description=EVAL_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("suite", type=Path, metavar="SUITE", help="the suite file (YAML)")
    parser.add_argument("--model", default=default_model(), help="the model the builds use (default: $AGENT_MODEL)")
    parser.add_argument("--provider", default=default_provider(),
                        help="anthropic, bedrock, vertex, or replay (default: anthropic with ANTHROPIC_API_KEY, "
                        "else replay)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=default_results(), metavar="FOLDER",
                        help="where runs are kept, one folder per model (default: ~/.cache/prototype-store/evals)")  # fmt: skip
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this case (repeat for more)")  # fmt: skip
    parser.add_argument("--compare", nargs="?", const="previous", metavar="RUN",
                        help="print this run beside another: a results file, a model (its latest run of the "
                        "suite), or nothing for the latest earlier run")  # fmt: skip
    parser.add_argument("--sandbox", default="bwrap")
    parser.add_argument("--cache", type=Path, default=default_cache(), metavar="FOLDER",
                        help="where mirrors and dependency layers are kept between runs (as for build)")  # fmt: skip
    parser.add_argument("--recordings", type=Path, default=RECORDINGS,
                        help="the sample conversations replay picks from (default: examples/recordings)")  # fmt: skip
    parser.add_argument("--toolchains", type=Path, metavar="FOLDER",
                        default=Path(os.environ["TOOLCHAIN_ROOT"]) if os.environ.get("TOOLCHAIN_ROOT") else None,
                        help="the toolchain folder (default: $TOOLCHAIN_ROOT)")  # fmt: skip
    parser.add_argument("--ro-bind", action="append", default=[], type=Path, metavar="FOLDER", dest="ro_binds",
                        help="a folder shown read-only in the sandbox (as for build)")  # fmt: skip
    parser.add_argument("--judge", action=argparse.BooleanOptionalAction, default=default_judge(),
                        help="judge each result against a checklist written from the idea, as builds do (default: "
                        "on, unless AGENT_JUDGE=off; a replayed sample is judged when it carries a sample review)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv=None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        suite = load_suite(args.suite)
    except SuiteError as exc:
        print(f"The suite cannot run:\n{exc}", file=sys.stderr)
        return 2
    cases = [c for c in suite.cases if not args.only or c.name in args.only]
    unknown = [n for n in args.only if n not in {c.name for c in suite.cases}]
    if unknown:
        print(f"--only: the suite has no case {', '.join(unknown)} (it has: {', '.join(c.name for c in suite.cases)})",
              file=sys.stderr)  # fmt: skip
        return 2
    settings = Settings(
        provider=args.provider, model=args.model, cache=args.cache.resolve(),
        recordings=args.recordings.resolve() if args.recordings else None, sandbox=args.sandbox,
        toolchain_root=args.toolchains.resolve() if args.toolchains else None,
        ro_binds=tuple(str(p.resolve()) for p in args.ro_binds), judge=args.judge,
    )  # fmt: skip
    results = args.results.expanduser().resolve()
    other = None
    if args.compare:  # found before the run, so a wrong name does not wait for the whole suite
        try:
            other = find_run(args.compare, results, suite.name)
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    started = datetime.now(UTC).replace(microsecond=0)
    model_dir = "replay" if settings.replayed else settings.model
    path = results_file(results, model_dir, started)
    if settings.replayed:
        why = "--provider replay" if os.environ.get("ANTHROPIC_API_KEY") else "no ANTHROPIC_API_KEY"
        print(f"{REPLAY_NOTICE} ({why}: the cases replay the hand-written samples of {settings.recordings})",
              file=out)  # fmt: skip
    else:
        print(f"{len(cases)} cases of {suite.name} with {settings.model} ({settings.provider})", file=out)
    out.flush()
    run = {
        "format": RESULTS_FORMAT, "suite": suite.name, "suite_file": str(suite.path), "model": settings.model,
        "model_dir": safe_name(model_dir), "provider": settings.provider, "replayed": settings.replayed,
        "notice": REPLAY_NOTICE if settings.replayed else "", "started": started.isoformat(), "cases": [],
    }  # fmt: skip
    runner = Eval(suite, settings, stamp=started.strftime("%Y%m%dT%H%M%S"), events_dir=path.with_suffix(""))
    try:
        for case in cases:
            record = runner.run_case(case)
            run["cases"].append(record)
            print_case(record, out)
    finally:
        runner.close()
        run["totals"] = totals(run["cases"])
        path.write_text(json.dumps(run, indent=1) + "\n")
    print_totals(run, out)
    print(f"results: {path}", file=out)
    if other is not None:
        print_comparison(run, other[1], other[0], out)
    return 0 if run["totals"]["failed"] == 0 else 1
