"""The agent's tools: the text editor confined to the workspace, `run` and `search` in the sandbox,
`verify` (the recipe's build and tests) and `finish`.

Everything the model sends is untrusted: editor paths are resolved (symlinks included) and refused
when they leave the workspace; commands only ever run in the sandbox.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from agents.errors import UserError
from agents.verify import VerifyReport, failure_code, run_verify

EDITOR = "str_replace_based_edit_tool"
MAX_VIEW_BYTES = 200_000
MAX_RESULT_CHARS = 24_000
MAX_SEARCH_LINES = 200
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "dist", "build"}

TOOL_SCHEMAS: list[dict] = sorted(
    [
        {"type": "text_editor_20250728", "name": EDITOR},
        {
            "name": "finish",
            "description": (
                "Call when the change is complete and `verify` has passed since your last edit. "
                "The summary is shown to the person who asked: plain words, no code, two or three sentences."
            ),
            "input_schema": {
                "type": "object",
                "properties": {"summary": {"type": "string", "description": "What changed, for a non-engineer."}},
                "required": ["summary"],
            },
        },
        {
            "name": "run",
            "description": (
                "Run a shell command (bash -c) at the repository root in a sandbox with no network. "
                "Use it to inspect or run the project's own scripts. Output is cut when long."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "command": {"type": "string"},
                    "timeout": {"type": "integer", "description": "seconds, default 120"},
                },
                "required": ["command"],
            },
        },
        {
            "name": "search",
            "description": "Search the repository with a regular expression (ripgrep). Returns path:line:text.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "pattern": {"type": "string"},
                    "path": {
                        "type": "string",
                        "description": "a folder or file to search, default the whole repository",
                    },
                    "glob": {"type": "string", "description": "only files matching this glob, e.g. *.js"},
                },
                "required": ["pattern"],
            },
        },
        {
            "name": "verify",
            "description": (
                "Run the project's own build and tests, exactly as the store will before publishing; for an "
                "app with pages, they are then opened in a browser (errors, failed requests, blank pages). "
                "Returns PASSED or FAILED with the relevant lines."
            ),
            "input_schema": {"type": "object", "properties": {}},
        },
    ],
    key=lambda tool: tool["name"],
)


# Offered only when the recipe's browser check is enabled (a web or served app). Its place in the list
# is fixed by its name, so the tools of one build are the same bytes in every request (prompt caching).
SCREENSHOT_SCHEMA = {
    "name": "screenshot",
    "description": (
        "See the app as a person would: builds it (when files changed since the last build), opens a page of "
        "it in a browser and returns a picture of it, with the page's errors. Use it to check your UI work."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "the page, like / (the app's start page) or /about.html"},
            "size": {"type": "string", "enum": ["desktop", "phone"], "description": "default desktop"},
        },
    },
}


def tool_list(*, screenshot: bool) -> list[dict]:
    """The agent's tools for one build, sorted by name."""
    tools = [*TOOL_SCHEMAS, SCREENSHOT_SCHEMA] if screenshot else TOOL_SCHEMAS
    return sorted(tools, key=lambda tool: tool["name"])


@dataclass(frozen=True)
class ToolOutcome:
    content: str | list[dict]  # text, or content blocks (the screenshot tool: an image and a text)
    is_error: bool = False


class ToolRefused(Exception):
    """The tool call was not allowed; the message goes back to the model as an error result."""


def clip(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """Keep the head and the tail of long text, deterministically (cache prefixes depend on it)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[… {len(text) - limit} characters cut …]\n{text[-half:]}"


class Toolbox:
    """Executes tool calls for one build and keeps the state `finish` and the stuck guard depend on."""

    def __init__(
        self,
        tree: Path,
        sandbox,
        recipe,
        *,
        max_verify_rounds: int,
        command_timeout: float,
        remaining,
        cancel=None,
        on_verify=None,
        before_verify=None,
        stuck_after: int = 3,
        smoke=None,
        browser=None,
    ):
        self.tree = tree.resolve()
        self.sandbox = sandbox
        self.recipe = recipe
        self.max_verify_rounds = max_verify_rounds
        self.command_timeout = command_timeout
        self.remaining = remaining  # () -> seconds left in the build
        self.cancel = cancel
        self.on_verify = on_verify
        # () -> None, or why the tests cannot run yet: the engine runs setup again when a lock file changed
        self.before_verify = before_verify
        self.stuck_after = stuck_after
        # () -> SmokeReport: the browser check verify ends with (None: the recipe has none).
        self.smoke = smoke
        # (path, size) -> (PageReport, PNG bytes): the screenshot tool's browser (None: not offered).
        self.browser = browser
        self.built = False  # the recipe's build ran since the last edit or command (the screenshot tool's)
        self.edited = False  # any successful edit at all
        self.dirty = True  # edits since the last passing verify (nothing verified yet)
        self.ran_since_verify = False  # a command may have changed files since the last verify
        self.verify_rounds = 0
        self.last_verify: VerifyReport | None = None
        self.summary: str | None = None
        # Optional (summary, last verify report) -> objections or None, asked each time finish would be
        # accepted (agents/judge.py Judge.review): it bounds its own rounds, raising when they run out.
        self.judge = None
        self._repeats: Counter[str] = Counter()

    # --- dispatch -------------------------------------------------------------------------------
    def call(self, name: str, tool_input: object) -> ToolOutcome:
        handlers = {EDITOR: self.editor, "run": self.run, "search": self.search, "verify": self.verify,
                    "finish": self.finish}  # fmt: skip
        if self.browser is not None:
            handlers["screenshot"] = self.screenshot
        handler = handlers.get(name)
        if handler is None:
            return ToolOutcome(f"Unknown tool '{name}'. Available: {', '.join(sorted(handlers))}.", True)
        if not isinstance(tool_input, dict):
            return ToolOutcome("The tool input must be a JSON object.", True)
        try:
            outcome = handler(tool_input)
        except ToolRefused as exc:
            outcome = ToolOutcome(str(exc), True)
        except (KeyError, TypeError, ValueError) as exc:
            outcome = ToolOutcome(f"Invalid input for {name}: {exc}", True)
        self._guard(name, tool_input, outcome)
        return outcome

    def _guard(self, name: str, tool_input: dict, outcome: ToolOutcome) -> None:
        """Stop a build that keeps repeating the same failing call or the same edit."""
        if name == "verify":
            return
        mutating = name == EDITOR and tool_input.get("command") in {"create", "str_replace", "insert"}
        if not outcome.is_error and not mutating:
            return
        key = name + json.dumps(tool_input, sort_keys=True)
        self._repeats[key] += 1
        if self._repeats[key] >= self.stuck_after:
            what = "the same edit" if mutating and not outcome.is_error else f"the same failing {name} call"
            raise UserError("stuck", f"Claude repeated {what} {self._repeats[key]} times: {key[:300]}")

    # --- paths ----------------------------------------------------------------------------------
    def resolve(self, raw: object, *, must_exist: bool = True) -> Path:
        if not isinstance(raw, str) or not raw.strip():
            raise ToolRefused("A 'path' is required.")
        text = raw.strip()
        # The sandbox shows the tree as /workspace; "/workspace-old/x" is not inside it.
        if text == "/workspace" or text.startswith("/workspace/"):
            text = text.removeprefix("/workspace").lstrip("/") or "."
        if os.path.isabs(text):
            raise ToolRefused(f"{raw} is outside the repository. Use paths relative to the repository root.")
        candidate = self.tree / text
        real = Path(os.path.realpath(candidate))
        if real != self.tree and self.tree not in real.parents:
            raise ToolRefused(f"{raw} is outside the repository (paths and links must stay inside it).")
        if must_exist and not real.exists():
            raise ToolRefused(f"{raw} does not exist.")
        return real

    def _display(self, path: Path) -> str:
        return str(path.relative_to(self.tree)) if path != self.tree else "."

    def _own(self, path: Path) -> None:
        """Files the host writes belong to the workspace's owner, so sandboxed commands can change them."""
        if os.geteuid() != 0:
            return
        owner = self.tree.stat()
        for part in [path, *path.parents]:
            if part == self.tree or self.tree not in part.parents:
                break
            os.chown(part, owner.st_uid, owner.st_gid, follow_symlinks=False)

    # --- the editor -----------------------------------------------------------------------------
    def editor(self, tool_input: dict) -> ToolOutcome:
        command = tool_input.get("command")
        if command == "view":
            return self._view(tool_input)
        if command in {"create", "str_replace", "insert"}:
            outcome = getattr(self, "_" + command)(tool_input)
            if not outcome.is_error:
                self.edited = True
                self.dirty = True
                self.built = False
            return outcome
        raise ToolRefused(f"Unknown editor command {command!r}; use view, create, str_replace or insert.")

    def _read(self, path: Path) -> str:
        if not path.is_file():
            raise ToolRefused(f"{self._display(path)} is not a file.")
        if path.stat().st_size > MAX_VIEW_BYTES:
            raise ToolRefused(f"{self._display(path)} is larger than {MAX_VIEW_BYTES} bytes; use search or view_range.")
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            raise ToolRefused(f"{self._display(path)} is a binary file.")
        return data.decode("utf-8", errors="replace")

    def _view(self, tool_input: dict) -> ToolOutcome:
        path = self.resolve(tool_input.get("path"))
        if path.is_dir():
            entries = []
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
                depth = len(Path(root).relative_to(path).parts)
                if depth >= 2:
                    dirs[:] = []
                for name in sorted(files):
                    entries.append(self._display(Path(root) / name))
                if len(entries) > 500:
                    break
            return ToolOutcome("\n".join(entries[:500]) or "(empty folder)")
        lines = self._read(path).splitlines()
        start, end = 1, len(lines)
        view_range = tool_input.get("view_range")
        if view_range is not None:
            if not (
                isinstance(view_range, list) and len(view_range) == 2 and all(isinstance(v, int) for v in view_range)
            ):
                raise ToolRefused("view_range must be [start, end] line numbers (end -1 for the last line).")
            start = max(1, view_range[0])
            end = len(lines) if view_range[1] == -1 else min(len(lines), view_range[1])
            if lines and (start > len(lines) or start > end):
                # Never "(empty file)" for a file with lines: the model could then overwrite it.
                raise ToolRefused(
                    f"view_range {view_range} shows nothing: {self._display(path)} has {len(lines)} lines."
                )
        numbered = "\n".join(f"{n}\t{lines[n - 1]}" for n in range(start, end + 1))
        return ToolOutcome(clip(numbered) or "(empty file)")

    def _create(self, tool_input: dict) -> ToolOutcome:
        text = tool_input["file_text"]
        if not isinstance(text, str):
            raise ToolRefused("file_text must be text.")
        path = self.resolve(tool_input.get("path"), must_exist=False)
        if path.is_dir():
            raise ToolRefused(f"{self._display(path)} is a folder.")
        if path.exists() and not path.is_file():
            raise ToolRefused(f"{self._display(path)} is not a regular file.")
        existed = path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self._own(path)
        return ToolOutcome(f"{'Overwrote' if existed else 'Created'} {self._display(path)}.")

    def _str_replace(self, tool_input: dict) -> ToolOutcome:
        path = self.resolve(tool_input.get("path"))
        old, new = tool_input["old_str"], tool_input.get("new_str", "")
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            raise ToolRefused("old_str must be non-empty text and new_str text.")
        text = self._read(path)
        count = text.count(old)
        if count == 0:
            raise ToolRefused(
                f"No match for old_str in {self._display(path)}; view the file and copy the text exactly."
            )
        if count > 1:
            lines = [text[:m].count("\n") + 1 for m in _find_all(text, old)]
            raise ToolRefused(
                f"old_str occurs {count} times in {self._display(path)} (lines {', '.join(map(str, lines))}); "
                "include more context so it is unique."
            )
        at = text.index(old)
        changed = text[:at] + new + text[at + len(old) :]
        path.write_text(changed)
        return ToolOutcome(f"Edited {self._display(path)}:\n{edited_lines(changed, at, new)}")

    def _insert(self, tool_input: dict) -> ToolOutcome:
        path = self.resolve(tool_input.get("path"))
        line, new = tool_input["insert_line"], tool_input["new_str"]
        if not isinstance(line, int) or not isinstance(new, str):
            raise ToolRefused("insert_line must be a line number and new_str text.")
        text = self._read(path)
        lines = text.splitlines(keepends=True)
        if not 0 <= line <= len(lines):
            raise ToolRefused(f"insert_line must be between 0 and {len(lines)}.")
        if lines and not lines[-1].endswith("\n") and line == len(lines):
            lines[-1] += "\n"
        lines.insert(line, new if new.endswith("\n") else new + "\n")
        path.write_text("".join(lines))
        return ToolOutcome(f"Inserted {new.count(chr(10)) + 1} line(s) after line {line} of {self._display(path)}.")

    # --- commands -------------------------------------------------------------------------------
    def _timeout(self, wanted: float) -> float:
        left = self.remaining()
        if left <= 1:
            raise UserError("timed_out", "the build ran out of time")
        return max(1.0, min(wanted, left))

    def run(self, tool_input: dict) -> ToolOutcome:
        command = tool_input["command"]
        if not isinstance(command, str) or not command.strip():
            raise ToolRefused("command must be a non-empty shell command.")
        wanted = tool_input.get("timeout") or 120
        if not isinstance(wanted, int | float) or wanted <= 0:
            raise ToolRefused("timeout must be a positive number of seconds.")
        result = self.sandbox.run(
            ["bash", "-c", command], timeout=self._timeout(min(wanted, self.command_timeout)), cancel=self.cancel
        )
        self.ran_since_verify = True
        self.built = False
        note = f" (stopped: {result.killed_reason})" if result.killed_reason else ""
        body = clip(result.output) if result.output else "(no output)"
        return ToolOutcome(
            f"exit code {result.exit_code}{note}\n{body}", result.exit_code != 0 or bool(result.killed_reason)
        )

    def search(self, tool_input: dict) -> ToolOutcome:
        pattern = tool_input["pattern"]
        if not isinstance(pattern, str) or not pattern:
            raise ToolRefused("pattern must be a non-empty regular expression.")
        where = self.resolve(tool_input.get("path") or ".")
        # --sort path: the same search gives the same bytes every time (the result stays in every later
        # request, and two attempts of one idea share their prefix only as far as their bytes agree);
        # without it ripgrep prints files in the order the folders list them and its threads finish.
        argv = ["rg", "--line-number", "--no-heading", "--color", "never", "--max-columns", "300",
                "--max-count", "50", "--max-filesize", "1M", "--sort", "path"]  # fmt: skip
        glob = tool_input.get("glob")
        if glob:
            if not isinstance(glob, str):
                raise ToolRefused("glob must be text like *.js")
            argv += ["--glob", glob]
        argv += ["-e", pattern, "--", "/workspace/" + self._display(where) if where != self.tree else "."]
        result = self.sandbox.run(argv, timeout=self._timeout(60), cancel=self.cancel)
        if result.exit_code == 1 and not result.output.strip():
            return ToolOutcome("No matches.")
        if result.exit_code not in (0, 1):
            return ToolOutcome(f"search failed: {clip(result.output, 2000)}", True)
        lines = [line.removeprefix("/workspace/").removeprefix("./") for line in result.output.splitlines()]
        extra = f"\n[… {len(lines) - MAX_SEARCH_LINES} more matching lines …]" if len(lines) > MAX_SEARCH_LINES else ""
        return ToolOutcome("\n".join(lines[:MAX_SEARCH_LINES]) + extra)

    def verify(self, tool_input: dict) -> ToolOutcome:
        if self.verify_rounds >= self.max_verify_rounds and not (self.last_verify and self.last_verify.passed):
            last = self.last_verify
            raise UserError(failure_code(last) if last else "tests_failed", last.for_model() if last else "")
        self.verify_rounds += 1
        if self.before_verify is not None:
            problem = self.before_verify()
            if problem:
                left = self.max_verify_rounds - self.verify_rounds
                return ToolOutcome(
                    f"FAILED: the setup commands failed after the lock files changed, so the tests did not run:\n"
                    f"{clip(problem, 4000)}\nFix the dependency change and call verify again ({left} attempts left).",
                    True,
                )
        report = run_verify(self.sandbox, self.recipe, timeout=self._timeout, cancel=self.cancel, smoke=self.smoke)
        self.last_verify = report
        self.built = bool(report.steps) and report.steps[0].ok
        self.dirty = not report.passed
        self.ran_since_verify = False
        if self.on_verify:
            self.on_verify(report)
        if not report.passed and self.verify_rounds >= self.max_verify_rounds:
            raise UserError(failure_code(report), report.for_model())
        left = self.max_verify_rounds - self.verify_rounds
        suffix = "" if report.passed else f"\nFix the problem and call verify again ({left} attempts left)."
        return ToolOutcome(report.for_model() + suffix, not report.passed)

    def screenshot(self, tool_input: dict) -> ToolOutcome:
        path = tool_input.get("path") or "/"
        size = tool_input.get("size") or "desktop"
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//") or len(path) > 300:
            raise ToolRefused("path must be a page of the app starting with '/', like / or /about.html")
        if size not in ("desktop", "phone"):
            raise ToolRefused('size must be "desktop" or "phone"')
        build = self.recipe.build
        if build is not None and not self.built:
            # The picture is of the code as it is now: its build runs in the sandbox first, as in verify.
            result = self.sandbox.run(["bash", "-c", build.command], timeout=self._timeout(build.timeout),
                                      cancel=self.cancel)  # fmt: skip
            if result.exit_code != 0 or result.killed_reason:
                return ToolOutcome(f"The build failed, so there is nothing to show (exit code {result.exit_code}):\n"
                                   f"{clip(result.output, 4000)}", True)  # fmt: skip
            self.built = True
        shown = self.browser(path, size)
        if isinstance(shown, str):  # the browser could not run here: say why, as text
            return ToolOutcome(f"No screenshot: {shown}", True)
        page, image = shown
        problems = page.problems()
        lines = [f"The page {path} at {size} size, title {page.title!r}."]
        lines += [f"Problems: {'; '.join(problems)}"] if problems else ["No errors in the browser."]
        return ToolOutcome([image, {"type": "text", "text": "\n".join(lines)}])

    def finish(self, tool_input: dict) -> ToolOutcome:
        summary = tool_input.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise ToolRefused("finish needs a summary for the person who asked.")
        if not self.edited:
            raise ToolRefused("Nothing has been changed yet. Make the change, call verify, then finish.")
        if self.dirty or not (self.last_verify and self.last_verify.passed):
            raise ToolRefused(
                "Call verify first: finish is accepted only when verify has passed since your last change."
            )
        if self.judge is not None:
            objections = self.judge(summary.strip(), self.last_verify)
            if objections:
                return ToolOutcome(
                    "Not yet: a reviewer checked the change against a checklist written from the idea and "
                    f"objects:\n{objections}\nAddress these points, call verify, then call finish again. If the "
                    "next review still finds them missing, the build fails.",
                    True,
                )
        self.summary = summary.strip()
        return ToolOutcome("Accepted. The store will package and publish the prototype.")


def edited_lines(changed: str, at: int, new: str, context: int = 2) -> str:
    """The lines of `changed` around the text `new` put at offset `at`, numbered as they now are, with
    `context` lines either side. Lines that hold nothing but the new text are not repeated, only named
    ("[lines 22-31: your new_str]"): the model has them in its own call, and a tool result stays in every
    later request, where it would be sent twice over. The result is the new part of the next request, the
    part prompt caching cannot reuse, so it carries only what the model does not know yet: where the text
    landed and what surrounds it (a line the edit only partly changed is shown whole)."""
    lines = changed.split("\n")
    count = len(lines) - 1 if changed.endswith("\n") else len(lines)
    first = changed.count("\n", 0, at) + 1
    last = first + new.count("\n")
    end = at + len(new)
    own = []  # the line numbers whose text all comes from `new`
    start = changed.rfind("\n", 0, at) + 1  # where line `first` starts
    for number in range(first, last + 1):
        stop = start + len(lines[number - 1])
        # An empty line where the new text ends is the file's own line that follows it, not the model's.
        if start >= at and (stop < end or (stop == end and start < stop)):
            own.append(number)
        start = stop + 1
    shown = []
    for number in range(max(1, first - context), min(count, last + context) + 1):
        if number not in own:
            shown.append(f"{number}\t{lines[number - 1].removesuffix(chr(13))}")
        elif number == own[0]:
            span = f"line {own[0]}" if len(own) == 1 else f"lines {own[0]}-{own[-1]}"
            shown.append(f"[{span}: your new_str]")
    return "\n".join(shown)


def _find_all(text: str, needle: str):
    start = text.find(needle)
    while start != -1:
        yield start
        start = text.find(needle, start + 1)
