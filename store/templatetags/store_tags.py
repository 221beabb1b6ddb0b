from django import template

from store.previews import live_url as make_live_url
from store.previews import preview_url as make_preview_url
from store.previews import serveable as is_serveable

register = template.Library()


@register.simple_tag
def preview_url(artifact, *, user=None, share_link=None, slug: str = "") -> str:
    """{% preview_url a user=request.user slug=prototype.slug %}, or {% preview_url a share_link=share_link %}:
    a preview URL names on whose behalf it was issued (see store/previews.py)."""
    return make_preview_url(artifact, user=user, share_link=share_link, slug=slug)


@register.simple_tag
def live_url(artifact, *, user=None, share_link=None, slug: str = "") -> str:
    """{% live_url a user=request.user slug=prototype.slug %}: where a serveable version opens live."""
    return make_live_url(artifact, user=user, share_link=share_link, slug=slug)


@register.filter
def serveable(artifact) -> bool:
    """Whether a version runs live (its recipe had [serve] when it was built): pages then offer Open first."""
    return is_serveable(artifact)


@register.filter
def usd(value) -> str:
    try:
        return f"${float(value):.4f}" if float(value) < 1 else f"${float(value):.2f}"
    except (TypeError, ValueError):
        return "—"


@register.filter
def percent(value) -> str:
    return f"{float(value) * 100:.0f}%"


@register.filter
def failing(tests) -> list:
    return [t for t in tests or [] if not t.get("passed")]


@register.filter(name="markdown")
def markdown_filter(text):
    from store.markdown import render_markdown

    return render_markdown(text)
