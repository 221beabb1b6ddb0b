"""Budgets: may this person start a build on this target now? Checked before anything is created, so a
request over budget costs nothing.

`check_build` is the store's build gate (settings.BUILD_GATE): prototypes/builds.py calls it at the start
of every entry point that makes a build, and refuses with the message it returns.

The rules, in order:
1. an admin paused all new builds (Control.builds_paused) → refused with the admin's message;
2. the person's builds and dollars today and this month, against their limits: each limit comes from the
   person's Budget row, else the company default row (no user, no target), else the BUDGET_* settings;
3. the target's builds and dollars today and this month, against the target's Budget row (if any).

A limit of 0 (or empty in the settings) means no limit. Builds count from the moment they are queued;
only builds with `charged=True` count, so builds that failed through our fault are free. Replayed builds
of the offline demo count as builds (they take a worker) but never as dollars: what counts as spent is
`Build.objects.spent()`, the same rule as the cost page's. Dollars are what finished builds cost (a running build's cost is known when it ends, and each build is capped by
AGENT_MAX_COST), so the dollar limits can be passed by the builds running when they were reached.
Two requests at the very same moment may both pass the last free build: rate limits keep that small.

Several attempts of one idea (prototypes/attempts.py) are checked together, before any is created: they
must all fit under the build limits, and the dollars left must let them start with each counted at
AGENT_MAX_COST (`room`); the refusal says how many attempts would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Q, Sum
from django.utils import timezone

from prototypes.inputs import display_name
from prototypes.models import Build
from store.models import Budget, Control

FIELDS = ("daily_builds", "monthly_builds", "daily_dollars", "monthly_dollars")


@dataclass(frozen=True)
class Limits:
    """None means no limit."""

    daily_builds: int | None = None
    monthly_builds: int | None = None
    daily_dollars: Decimal | None = None
    monthly_dollars: Decimal | None = None


@dataclass(frozen=True)
class Usage:
    daily_builds: int = 0
    monthly_builds: int = 0
    daily_dollars: Decimal = Decimal(0)
    monthly_dollars: Decimal = Decimal(0)


def as_limit(value):
    """0 and empty mean no limit."""
    if value in (None, ""):
        return None
    return value if value > 0 else None


def default_limits() -> Limits:
    return Limits(
        daily_builds=as_limit(settings.BUDGET_DAILY_BUILDS),
        monthly_builds=as_limit(settings.BUDGET_MONTHLY_BUILDS),
        daily_dollars=as_limit(Decimal(settings.BUDGET_DAILY_DOLLARS or 0)),
        monthly_dollars=as_limit(Decimal(settings.BUDGET_MONTHLY_DOLLARS or 0)),
    )


def user_limits(user) -> Limits:
    """The person's limits: each one from their own Budget row, else the company default row, else
    the settings."""
    rows = {row.user_id: row for row in Budget.objects.filter(Q(user=user) | Q(user=None, target=None))}
    mine, company, defaults = rows.get(user.pk), rows.get(None), default_limits()
    values = {}
    for field in FIELDS:
        for source in (mine, company):
            value = getattr(source, field) if source is not None else None
            if value is not None:
                values[field] = as_limit(value)
                break
        else:
            values[field] = getattr(defaults, field)
    return Limits(**values)


def target_limits(target) -> Limits:
    """A target is limited only by its own Budget row."""
    row = Budget.objects.filter(target=target).first()
    if row is None:
        return Limits()
    return Limits(**{field: as_limit(getattr(row, field)) for field in FIELDS})


def period_starts(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The start of today and of this month, in the store's time zone."""
    local = timezone.localtime(now)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def usage(builds) -> Usage:
    """Builds and dollars of the given builds today and this month (charged builds only; dollars only of
    builds that spent any: see the module's docstring)."""
    day, month = period_starts()
    today = Q(created_at__gte=day)
    charged = builds.filter(charged=True, created_at__gte=month)
    totals = charged.aggregate(monthly_builds=Count("pk"), daily_builds=Count("pk", filter=today))
    totals |= charged.spent().aggregate(monthly_dollars=Sum("cost"), daily_dollars=Sum("cost", filter=today))
    return Usage(
        daily_builds=totals["daily_builds"],
        monthly_builds=totals["monthly_builds"],
        daily_dollars=Decimal(totals["daily_dollars"] or 0),
        monthly_dollars=Decimal(totals["monthly_dollars"] or 0),
    )


def user_usage(user) -> Usage:
    return usage(Build.objects.filter(revision__author=user))


def target_usage(target) -> Usage:
    return usage(Build.objects.filter(revision__prototype__target=target))


def next_month(now: datetime | None = None) -> datetime:
    _day, month = period_starts(now)
    return (month + timedelta(days=32)).replace(day=1)


def _resets(field: str) -> str:
    if field.startswith("daily"):
        return "It resets tomorrow."
    start = next_month()
    return f"It resets on {start.day} {start:%B}."


def _money(value: Decimal) -> str:
    return f"${value:,.2f}"


def contact() -> str:
    """Who to ask for a higher limit: BUDGET_CONTACT, else the admins by name."""
    if settings.BUDGET_CONTACT:
        return f"Ask {settings.BUDGET_CONTACT} to raise it."
    admins = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk")[:3]
    names = [display_name(admin) for admin in admins]
    return f"Ask an admin ({', '.join(names)}) to raise it." if names else "Ask an admin to raise it."


def _describe(field: str, limit, used, *, who: str, their: str) -> str:
    period = "today" if field.startswith("daily") else "this month"
    kind = "daily" if field.startswith("daily") else "monthly"
    if field.endswith("builds"):
        builds = "build" if limit == 1 else "builds"
        return f"{who} reached {their} {kind} limit of {limit} {builds} ({used} started {period})."
    return f"{who} reached {their} {kind} budget of {_money(limit)} ({_money(used)} spent {period})."


def check_build(user, target, count: int = 1) -> str | None:
    """Why this person may not start `count` builds on this target now (the attempts of one idea, all
    checked up front), in plain words; None when they may."""
    control = Control.get()
    if control.builds_paused:
        message = control.pause_message.strip() or "An admin paused them for a while."
        return f"New builds are paused. {message}"
    if text := _refusal(user_limits(user), user_usage(user), count, who="You have", their="your"):
        return text
    limits = target_limits(target)
    if limits != Limits():
        return _refusal(limits, target_usage(target), count, who=f"{target.name} has", their="its")
    return None


def cost_each() -> Decimal:
    """What one build is counted at when several are asked for at once: AGENT_MAX_COST, the most a build
    may spend; nothing when builds replay sample conversations (they spend nothing)."""
    return Decimal(0) if settings.AGENT_PROVIDER == "replay" else Decimal(settings.AGENT_MAX_COST)


def room(limits: Limits, used: Usage, field: str) -> int | None:
    """How many more builds the limit `field` lets start now; None when it does not limit them.

    A build limit counts builds. A dollar limit lets builds start while money is left, each counted at
    `cost_each()`: one build needs only some money left (its cost is known when it ends, as the module's
    docstring says), and N builds need the first N-1 to leave something for the last at the most each
    may cost. So asking for several at once can pass the limit by no more than one build can alone."""
    limit = getattr(limits, field)
    if limit is None:
        return None
    left = limit - getattr(used, field)
    if left <= 0:
        return 0
    if field.endswith("builds"):
        return left
    each = cost_each()
    return math.ceil(left / each) if each > 0 else None


def _refusal(limits: Limits, used: Usage, count: int, *, who: str, their: str) -> str | None:
    """The first limit that does not leave room for `count` builds, said in plain words; or None."""
    for field in FIELDS:
        fits = room(limits, used, field)
        if fits is None or fits >= count:
            continue
        limit, spent = getattr(limits, field), getattr(used, field)
        if fits == 0:
            text = _describe(field, limit, spent, who=who, their=their)
        else:
            text = _too_many(field, limit, spent, count, fits, who=who, their=their)
        return f"{text} {_resets(field)} {contact()}"
    return None


def _too_many(field: str, limit, used, count: int, fits: int, *, who: str, their: str) -> str:
    """Several attempts asked for, fewer fit: say how many would."""
    kind = "daily" if field.startswith("daily") else "monthly"
    fit = "1 attempt fits" if fits == 1 else f"{fits} attempts fit"
    if field.endswith("builds"):
        left = f"{limit - used} builds" if limit - used != 1 else "1 build"
        return f"{who} {left} left of {their} {kind} limit of {limit}: {fit}, not {count}. Ask for {fits} or fewer."
    return (
        f"{who} {_money(limit - used)} left of {their} {kind} budget of {_money(limit)}, and each attempt may cost "
        f"up to {_money(cost_each())}: {fit}, not {count}. Ask for {fits} or fewer."
    )
