"""A stored patch turned into files with syntax-highlighted lines for the "Changes" page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_for_filename
from pygments.util import ClassNotFound

HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")
FORMATTER = HtmlFormatter(nowrap=True)
MAX_LINES_PER_FILE = 3000


@dataclass
class Line:
    kind: str  # "add", "del", "ctx", "hunk"
    old: int | None
    new: int | None
    html: SafeString


@dataclass
class FileDiff:
    path: str
    status: str = "changed"  # "added", "deleted", "changed", "binary"
    added: int = 0
    deleted: int = 0
    lines: list[Line] = field(default_factory=list)
    cut: bool = False


def _lexer(path: str):
    try:
        return get_lexer_for_filename(path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def _code(text: str, lexer) -> SafeString:
    if lexer is None:
        return mark_safe(escape(text))
    return mark_safe(highlight(text, lexer, FORMATTER).rstrip("\n"))  # Pygments escapes its output


def parse_patch(text: str) -> list[FileDiff]:
    files: list[FileDiff] = []
    current: FileDiff | None = None
    lexer = None
    old = new = 0
    for raw in text.splitlines():
        if raw.startswith("diff --git "):
            path = raw.split(" b/", 1)[-1]
            current = FileDiff(path=path)
            files.append(current)
            lexer = _lexer(path)
            continue
        if current is None:
            continue
        if raw.startswith("new file mode"):
            current.status = "added"
        elif raw.startswith("deleted file mode"):
            current.status = "deleted"
        elif raw.startswith("Binary files"):
            current.status = "binary"
        elif raw.startswith(("--- ", "+++ ", "index ", "similarity", "rename ", "old mode", "new mode")):
            continue
        elif match := HUNK.match(raw):
            old, new = int(match[1]), int(match[2])
            current.lines.append(Line("hunk", None, None, mark_safe(escape(raw))))
        elif len(current.lines) >= MAX_LINES_PER_FILE:
            current.cut = True
            current.added += raw.startswith("+")
            current.deleted += raw.startswith("-")
        elif raw.startswith("+"):
            current.lines.append(Line("add", None, new, _code(raw[1:], lexer)))
            current.added += 1
            new += 1
        elif raw.startswith("-"):
            current.lines.append(Line("del", old, None, _code(raw[1:], lexer)))
            current.deleted += 1
            old += 1
        elif raw.startswith(" "):
            current.lines.append(Line("ctx", old, new, _code(raw[1:], lexer)))
            old += 1
            new += 1
    return files


def highlight_css() -> str:
    return FORMATTER.get_style_defs(".diff .code")
