"""Policies REST framework loads together with its views (so nothing here may import a view): how the
API pages its lists, and the store's rate limits (store/ratelimit.py) applied to the API's actions."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.throttling import BaseThrottle

from store import ratelimit

# (basename, action) → the rate limit it counts against (store.ratelimit.SCOPES): the same limits as the pages.
LIMITS = {
    ("prototype", "create"): "builds",
    ("prototype", "change"): "builds",
    ("revision", "remix"): "builds",
    ("build", "retry"): "builds",
    ("comment", "send_to_agent"): "builds",
    ("comment", "create"): "comments",
}


class Pages(PageNumberPagination):
    """`?page=2&page_size=50`; at most 100 a page."""

    page_size = 25
    page_size_query_param = "page_size"
    max_page_size = 100
    invalid_page_message = "{message}."  # Django's own words: "That page contains no results."


class TooMany(exceptions.Throttled):
    """Over one of the store's rate limits; the message says which."""

    def __init__(self, wait: int, message: str):
        exceptions.APIException.__init__(self, message, "throttled")
        self.wait = wait


class Limits(BaseThrottle):
    """The store's rate limits for the API actions in LIMITS, counted per person with the pages'."""

    def allow_request(self, request, view):
        name = LIMITS.get((getattr(view, "basename", None), getattr(view, "action", None)))
        if name is None or not request.user.is_authenticated:
            return True
        refused = ratelimit.refuse(name, f"user:{request.user.pk}")
        if refused:
            raise TooMany(*refused)
        return True
