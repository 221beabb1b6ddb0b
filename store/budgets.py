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
"""

from __future__ import annotations

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


def over(limits: Limits, used: Usage) -> str | None:
    """The first limit reached, or None."""
    for field in FIELDS:
        limit = getattr(limits, field)
        if limit is not None and getattr(used, field) >= limit:
            return field
    return None


def _describe(field: str, limit, used, *, who: str, their: str) -> str:
    period = "today" if field.startswith("daily") else "this month"
    kind = "daily" if field.startswith("daily") else "monthly"
    if field.endswith("builds"):
        builds = "build" if limit == 1 else "builds"
        return f"{who} reached {their} {kind} limit of {limit} {builds} ({used} started {period})."
    return f"{who} reached {their} {kind} budget of {_money(limit)} ({_money(used)} spent {period})."


def check_build(user, target) -> str | None:
    """Why this person may not start a build on this target now, in plain words; None when they may."""
    control = Control.get()
    if control.builds_paused:
        message = control.pause_message.strip() or "An admin paused them for a while."
        return f"New builds are paused. {message}"
    limits, used = user_limits(user), user_usage(user)
    field = over(limits, used)
    if field:
        text = _describe(field, getattr(limits, field), getattr(used, field), who="You have", their="your")
        return f"{text} {_resets(field)} {contact()}"
    limits = target_limits(target)
    if limits != Limits():
        used = target_usage(target)
        field = over(limits, used)
        if field:
            text = _describe(field, getattr(limits, field), getattr(used, field), who=f"{target.name} has", their="its")
            return f"{text} {_resets(field)} {contact()}"
    return None
