"""Rate limits: a fixed-window counter per person (or per client address) in Django's cache.

A rate is "<count>/<unit>" with unit s, m, h or d ("10/h": ten an hour); empty or a count of 0 turns it
off. Counters live in the default cache: Redis when REDIS_URL is set (shared by every web process),
memory otherwise (each process counts for itself, which is what the embedded default runs: one).
A fixed window can let through up to twice the count around its edge; that is fine for slowing people
and scripts down, which is all this is for. Over the limit, the view is not called: the person gets a
429 page that says when to try again, with a Retry-After header.

Most limits count requests. The build limit counts builds: a submission refused (an image that is not
one, an empty idea, a budget reached) costs nothing, so a request is only checked against the count
before it runs, and `CountAcceptedBuilds` adds the builds it actually created once it is done. Two
requests at the same moment may then both take the last build of a window; the next one waits.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.core.cache import cache
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.shortcuts import render

from prototypes.models import Build

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UNIT_WORDS = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}


@dataclass(frozen=True)
class Scope:
    setting: str  # the settings name holding the rate
    what: str  # what is counted, as a person reads it ("new builds")
    per: str = "user"  # "user" (signed-in person, else client address) or "ip"
    methods: tuple[str, ...] = ("POST",)  # the requests that count; empty: all
    counts_builds: bool = False  # count the builds a request created, not the request (see above)


SCOPES = {
    "builds": Scope("RATELIMIT_BUILDS", "new builds", counts_builds=True),
    "comments": Scope("RATELIMIT_COMMENTS", "comments"),
    "share_links": Scope("RATELIMIT_SHARE_LINKS", "requests to shared prototypes", per="ip", methods=()),
}


def parse_rate(rate: str) -> tuple[int, int] | None:
    """(count, seconds) for a rate like "10/h", or None when the limit is off."""
    rate = (rate or "").strip()
    if not rate:
        return None
    count, _, unit = rate.partition("/")
    unit = unit.strip().lower() or "s"
    if not count.strip().isdigit() or unit not in UNITS:
        raise ValueError(f"a rate is <count>/<s|m|h|d>, like 10/h; got {rate!r}")
    return (int(count), UNITS[unit]) if int(count) else None


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or behind a reverse proxy the last address in the header it
    sets (RATELIMIT_CLIENT_IP_HEADER): the only one the proxy vouches for; earlier ones anyone can write."""
    header = settings.RATELIMIT_CLIENT_IP_HEADER
    if header:
        value = request.META.get("HTTP_" + header.upper().replace("-", "_"), "")
        addresses = [part.strip() for part in value.split(",") if part.strip()]
        if addresses:
            return addresses[-1]
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def hit(name: str, key: str, rate: str, *, now: float | None = None, count: bool = True) -> int:
    """Count one request against the rate. Returns 0 when it is allowed, else the seconds until the
    window ends (when the person may try again). With count=False it only looks: would one more go over?"""
    parsed = parse_rate(rate)
    if parsed is None:
        return 0
    limit, period = parsed
    now = time.time() if now is None else now
    window = int(now // period)
    counter = f"ratelimit:{name}:{key}:{period}:{window}"
    if not count:
        counted = (cache.get(counter) or 0) + 1
    else:
        cache.add(counter, 0, timeout=period + 5)
        try:
            counted = cache.incr(counter)
        except ValueError:  # it expired between add and incr
            cache.set(counter, 1, timeout=period + 5)
            counted = 1
    if counted <= limit:
        return 0
    return max(1, math.ceil((window + 1) * period - now))


def refuse(name: str, key: str) -> tuple[int, str] | None:
    """None when a request may go ahead under the named limit (see SCOPES), else (seconds to wait, why).
    Pages (`check`) and the API (store/api_policies.py) both ask this."""
    scope = SCOPES[name]
    rate = getattr(settings, scope.setting)
    wait = hit(name, key, rate, count=not scope.counts_builds)
    if not wait:
        return None
    limit, period = parse_rate(rate)
    return wait, f"Too many {scope.what}: at most {limit} {UNIT_WORDS.get(period, f'every {period} seconds')}."


def describe_wait(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    if seconds < 90 * 60:
        minutes = round(seconds / 60)
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    return f"{hours} hour{'s' if hours != 1 else ''}"


def too_many(request, *, message: str, retry_after: int):
    response = render(request, "store/429.html", {"message": message, "wait": describe_wait(retry_after)}, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def check(request, name: str):
    """A 429 response when this request goes over the named limit (see SCOPES), else None."""
    scope = SCOPES[name]
    if scope.methods and request.method not in scope.methods:
        return None
    user = getattr(request, "user", None)
    if scope.per == "user" and user is not None and user.is_authenticated:
        key = f"user:{user.pk}"
    else:
        key = f"ip:{client_ip(request)}"
    refused = refuse(name, key)
    if refused is None:
        return None
    wait, message = refused
    return too_many(request, message=message, retry_after=wait)


def ratelimit(name: str):
    """Decorate a view with the named limit (see SCOPES)."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            return check(request, name) or view(request, *args, **kwargs)

        return wrapper

    return decorator


# --- counting accepted builds ------------------------------------------------------------------------------

_created_builds: ContextVar[list[int] | None] = ContextVar("created_builds", default=None)


@receiver(post_save, sender=Build, dispatch_uid="store.ratelimit.note_build")
def note_build(sender, instance, created, **kwargs):
    """Remember each build created while a request is being answered (a page, the API, a comment sent
    to the agent): CountAcceptedBuilds counts them when the request is done."""
    builds = _created_builds.get()
    if created and builds is not None:
        builds.append(instance.pk)


class CountAcceptedBuilds:
    """Middleware: the builds a request created count against the build limit of the person who asked
    (after the view, so that for the API it is the person its token names)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        builds: list[int] = []
        reset = _created_builds.set(builds)
        try:
            response = self.get_response(request)
        finally:
            _created_builds.reset(reset)
        user = getattr(request, "user", None)
        if builds and user is not None and user.is_authenticated:
            for _build in builds:
                hit("builds", f"user:{user.pk}", settings.RATELIMIT_BUILDS)
        return response
