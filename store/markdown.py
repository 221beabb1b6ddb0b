"""Markdown written by people (descriptions, comments) turned into HTML that is safe to show:
rendered with Python-Markdown, then cleaned by nh3 down to a small set of tags."""

from __future__ import annotations

import re

import markdown as md
import nh3
from django.utils.safestring import SafeString, mark_safe

TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h3", "h4", "hr", "del",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}}
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.+-]{2,150})")


def render_markdown(text: str) -> SafeString:
    html = md.markdown(text or "", extensions=["fenced_code", "sane_lists"], output_format="html")
    clean = nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                      link_rel="noopener noreferrer nofollow")  # fmt: skip
    return mark_safe(clean)  # nh3 removed every tag and attribute not listed above


def mentions(text: str) -> set[str]:
    """Usernames mentioned as @name in a text."""
    return set(MENTION.findall(text or ""))
