"""A new maker's way through the store, on every page: the header's unread notices and the home page's
"Start here" card. Tags rather than a context processor, so the query runs only where a page shows it."""

from django import template

from prototypes.models import Prototype
from store.inbox import unread_count

register = template.Library()


@register.simple_tag(takes_context=True)
def unread_notices(context) -> int:
    """{% unread_notices as unread %}: the signed-in person's unread notices they may still see."""
    request = context.get("request")
    return unread_count(request.user) if request is not None else 0


@register.simple_tag(takes_context=True)
def has_prototypes(context) -> bool:
    """{% has_prototypes as made %}: whether the signed-in person owns any prototype yet."""
    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return False
    return Prototype.objects.filter(owner=request.user).exists()
