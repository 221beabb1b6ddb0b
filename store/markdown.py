"""Markdown written by people (descriptions, comments) turned into HTML that is safe to show:
rendered with Python-Markdown, then cleaned by nh3 down to a small set of tags."""

from __future__ import annotations

import re

import markdown as md
import nh3
from django.utils.html import escape
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "h3", "h4", "hr", "del",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}}
MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.+-]{2,150})")
# The cleaned HTML in pieces: a tag, or the text between two tags.
PIECES = re.compile(r"(<[^>]*>)")
NO_LINKS_INSIDE = {"a", "code", "pre"}


def render_markdown(text: str) -> SafeString:
    html = md.markdown(text or "", extensions=["fenced_code", "sane_lists"], output_format="html")
    clean = nh3.clean(html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto"},
                      link_rel="noopener noreferrer nofollow")  # fmt: skip
    return mark_safe(link_mentions(clean))  # nh3 removed every tag and attribute not listed above


def link_mentions(html: str) -> str:
    """Turn @name in the text of cleaned HTML into a highlighted link to that person's prototypes in the
    catalog, for names of real users only: an unknown @name stays plain text, so a link never claims a
    person exists. Text inside links and code is left alone. The link is built here from the username
    (escaped), after nh3 cleaned the HTML, so nothing a person typed becomes markup."""
    found = {name.rstrip(".") for name in MENTION.findall(html)}
    if not found:
        return html
    from django.contrib.auth import get_user_model
    from django.urls import reverse

    real = set(get_user_model().objects.filter(username__in=found, is_active=True).values_list("username", flat=True))
    if not real:
        return html
    catalog = reverse("home")

    def link(match: re.Match) -> str:
        name = match.group(1).rstrip(".")
        if name not in real:
            return match.group(0)
        rest = match.group(1)[len(name) :]
        href = f"{catalog}?{urlencode({'owner': name})}"
        return (
            f'<a class="mention" href="{escape(href)}" title="Prototypes by {escape(name)}">@{escape(name)}</a>{rest}'
        )

    pieces, depth = [], 0
    for piece in PIECES.split(html):
        if piece.startswith("<"):
            tag = re.match(r"</?\s*([a-zA-Z0-9]+)", piece)
            if tag and tag.group(1).lower() in NO_LINKS_INSIDE:
                depth += -1 if piece.startswith("</") else 1
            pieces.append(piece)
        else:
            pieces.append(MENTION.sub(link, piece) if depth <= 0 else piece)
    return "".join(pieces)


def mentions(text: str) -> set[str]:
    """Usernames mentioned as @name in a text."""
    return set(MENTION.findall(text or ""))
