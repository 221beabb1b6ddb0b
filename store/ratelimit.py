"""Rate limits: a fixed-window counter per person (or per client address) in Django's cache.

A rate is "<count>/<unit>" with unit s, m, h or d ("10/h": ten an hour); empty or a count of 0 turns it
off. Counters live in the default cache: Redis when REDIS_URL is set (shared by every web process),
memory otherwise (each process counts for itself, which is what the embedded default runs: one).
A fixed window can let through up to twice the count around its edge; that is fine for slowing people
and scripts down, which is all this is for. Over the limit, the view is not called: the person gets a
429 page that says when to try again, with a Retry-After header.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.core.cache import cache
from django.shortcuts import render

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UNIT_WORDS = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}


@dataclass(frozen=True)
class Scope:
    setting: str  # the settings name holding the rate
    what: str  # what is counted, as a person reads it ("new builds")
    per: str = "user"  # "user" (signed-in person, else client address) or "ip"
    methods: tuple[str, ...] = ("POST",)  # the requests that count; empty: all


SCOPES = {
    "builds": Scope("RATELIMIT_BUILDS", "new builds"),
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


def hit(name: str, key: str, rate: str, *, now: float | None = None) -> int:
    """Count one request against the rate. Returns 0 when it is allowed, else the seconds until the
    window ends (when the person may try again)."""
    parsed = parse_rate(rate)
    if parsed is None:
        return 0
    limit, period = parsed
    now = time.time() if now is None else now
    window = int(now // period)
    counter = f"ratelimit:{name}:{key}:{period}:{window}"
    cache.add(counter, 0, timeout=period + 5)
    try:
        count = cache.incr(counter)
    except ValueError:  # it expired between add and incr
        cache.set(counter, 1, timeout=period + 5)
        count = 1
    if count <= limit:
        return 0
    return max(1, math.ceil((window + 1) * period - now))


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
    rate = getattr(settings, scope.setting)
    user = getattr(request, "user", None)
    if scope.per == "user" and user is not None and user.is_authenticated:
        key = f"user:{user.pk}"
    else:
        key = f"ip:{client_ip(request)}"
    wait = hit(name, key, rate)
    if not wait:
        return None
    limit, period = parse_rate(rate)
    message = f"Too many {scope.what}: at most {limit} {UNIT_WORDS.get(period, f'every {period} seconds')}."
    return too_many(request, message=message, retry_after=wait)


def ratelimit(name: str):
    """Decorate a view with the named limit (see SCOPES)."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            return check(request, name) or view(request, *args, **kwargs)

        return wrapper

    return decorator
