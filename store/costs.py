"""The admin cost page: tokens and dollars by person, app and day with a chart drawn on the server (inline
SVG, no scripts), the switch that pauses all new builds, and the budgets people and apps have.

Admins (superusers) only: everyone else signed in gets a 404, as if the page did not exist. Amounts are
what the model calls cost (ModelCall rows), including builds that failed through our fault (those are
not charged to the person's budget, but the company still paid for them). Builds that replayed a sample
conversation spent nothing and are left out of every number, chart and row here (`spent()` on the
querysets is the one rule); the page only says how many there were."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from prototypes.inputs import display_name
from prototypes.models import Build, ModelCall, Target
from store import budgets
from store.forms import WholeNumberField
from store.models import Budget, Control

log = logging.getLogger(__name__)
PERIODS = [7, 30, 90, 365]
DEFAULT_DAYS = 30
TOKENS = F("input_tokens") + F("output_tokens") + F("cache_write_tokens") + F("cache_read_tokens")


def admin_required(view):
    """Signed in (else the sign-in page) and an admin (else a 404: the page is not advertised)."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not request.user.is_superuser:
            raise Http404("No such page.")
        return view(request, *args, **kwargs)

    return wrapper


def money(value) -> str:
    value = Decimal(value or 0)
    return f"${value:,.4f}" if 0 < value < Decimal("0.01") else f"${value:,.2f}"


def count(value) -> str:
    return f"{int(value or 0):,}"


# --- the numbers ---------------------------------------------------------------------------------------


def period_start(days: int, today: date | None = None) -> datetime:
    """Midnight (store time zone) at the start of a period of `days` days ending today."""
    today = today or timezone.localdate()
    first = today - timedelta(days=days - 1)
    return timezone.make_aware(datetime(first.year, first.month, first.day))


def _sums() -> dict:
    return {"tokens": Sum(TOKENS), "dollars": Sum("cost"), "calls": Count("pk")}


def by_day(start: datetime, days: int) -> list[dict]:
    """Every day of the period, oldest first, with its tokens, dollars and model calls (zero when none)."""
    calls = ModelCall.objects.spent().filter(created_at__gte=start)
    rows = {row["day"]: row for row in calls.annotate(day=TruncDate("created_at")).values("day").annotate(**_sums())}
    first = timezone.localtime(start).date()
    out = []
    for n in range(days):
        day = first + timedelta(days=n)
        row = rows.get(day, {})
        out.append({"day": day, "tokens": row.get("tokens") or 0, "dollars": Decimal(row.get("dollars") or 0),
                    "calls": row.get("calls") or 0})  # fmt: skip
    return out


def _grouped(start: datetime, call_key: str, build_key: str) -> dict:
    """Model-call totals and build counts per value of a key (a person's or an app's id)."""
    out: dict = {}
    for row in ModelCall.objects.spent().filter(created_at__gte=start).values(call_key).annotate(**_sums()):
        out[row[call_key]] = {"tokens": row["tokens"] or 0, "dollars": Decimal(row["dollars"] or 0),
                              "calls": row["calls"], "builds": 0, "free": 0}  # fmt: skip
    builds = Build.objects.spent().filter(created_at__gte=start).values(build_key)
    for row in builds.annotate(builds=Count("pk"), free=Count("pk", filter=Q(charged=False))):
        item = out.setdefault(row[build_key], {"tokens": 0, "dollars": Decimal(0), "calls": 0})
        item.update(builds=row["builds"], free=row["free"])
    return out


def by_user(start: datetime) -> list[dict]:
    """People with builds or model calls in the period, the most expensive first."""
    rows = _grouped(start, "build__revision__author", "revision__author")
    people = get_user_model().objects.in_bulk(list(rows))
    out = [{"user": people[pk], **row} for pk, row in rows.items() if pk in people]
    return sorted(out, key=lambda r: (-r["dollars"], -r["builds"], r["user"].get_username()))


def by_target(start: datetime) -> list[dict]:
    """Apps with builds or model calls in the period, the most expensive first."""
    rows = _grouped(start, "build__revision__prototype__target", "revision__prototype__target")
    targets = Target.objects.in_bulk(list(rows))
    out = [{"target": targets[pk], **row} for pk, row in rows.items() if pk in targets]
    return sorted(out, key=lambda r: (-r["dollars"], -r["builds"], r["target"].name))


# --- the chart -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    top: int
    left: int
    bottom: int  # y of the axis
    bars: list[dict]
    ticks: list[dict]  # horizontal gridlines with their labels
    labels: list[dict]  # days under the axis
    summary: str  # for screen readers


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2 or 4 × 10^n at or above value: a top for the axis whose quarters are round."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 4, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power


def tick_label(value: float, ceiling: float) -> str:
    return f"${value:,.2f}" if ceiling >= 0.04 else f"${value:,.4f}"


def chart(days: list[dict], *, width: int = 760, height: int = 220) -> Chart:
    """Bars of dollars per day, laid out here so the template only writes SVG elements."""
    left, right, top, bottom_pad = 56, 8, 12, 26
    plot_w, plot_h = width - left - right, height - top - bottom_pad
    bottom = top + plot_h
    peak = max((float(d["dollars"]) for d in days), default=0.0)
    ceiling = nice_ceiling(peak)
    slot = plot_w / max(len(days), 1)
    gap = min(4.0, slot * 0.2)
    bars = []
    for n, d in enumerate(days):
        h = float(d["dollars"]) / ceiling * plot_h
        bars.append({
            "x": round(left + n * slot + gap / 2, 2), "y": round(bottom - h, 2), "w": round(max(slot - gap, 1), 2),
            "h": round(h, 2),
            "title": f"{d['day']:%a} {d['day'].day} {d['day']:%b}: {money(d['dollars'])}, {count(d['tokens'])} tokens, "
                     f"{count(d['calls'])} calls",
        })  # fmt: skip
    ticks = [{"y": round(bottom - plot_h * i / 4, 2), "label": tick_label(ceiling * i / 4, ceiling)} for i in range(5)]
    every = max(1, math.ceil(len(days) / 10))  # at most ten dates under the axis
    labels = [
        {"x": round(left + (n + 0.5) * slot, 2), "text": f"{d['day'].day} {d['day']:%b}"}
        for n, d in enumerate(days)
        if n % every == 0
    ]
    total = sum((d["dollars"] for d in days), Decimal(0))
    summary = (
        f"Dollars per day over {len(days)} days: {money(total)} in all, at most {money(Decimal(str(peak)))} a day."
    )
    return Chart(width, height, top, left, bottom, bars, ticks, labels, summary)


# --- budgets overview ----------------------------------------------------------------------------------


def limit_text(value, *, dollars: bool) -> str:
    """A limit in words: an empty one, or 0 (still accepted from before, budgets.as_limit), is "No limit"."""
    if value is None or value == 0:
        return "No limit"
    return money(value) if dollars else count(value)


def default_limit_phrase(value, *, dollars: bool) -> str:
    """A settings limit inside a sentence: "20 builds", "$5.00", or words where there is no limit."""
    if value is None or value == 0:
        return "any amount" if dollars else "any number of builds"
    return money(value) if dollars else f"{count(value)} builds"


def budget_rows() -> list[dict]:
    """Every Budget row with the limits in force (an empty one shows where it comes from) and the usage
    they limit today and this month."""
    rows = []
    for budget in Budget.objects.select_related("user", "target").order_by("target", "user"):
        if budget.user_id:
            scope, used = display_name(budget.user), budgets.user_usage(budget.user)
            effective, inherited = budgets.user_limits(budget.user), " (default)"
        elif budget.target_id:
            scope, used = budget.target.name, budgets.target_usage(budget.target)
            effective, inherited = budgets.target_limits(budget.target), ""
        else:
            scope, used = "Everyone (company default)", None
            effective, inherited = budgets.default_limits(), " (settings)"
        cells = []
        for field in budgets.FIELDS:
            dollars = field.endswith("dollars")
            text = limit_text(getattr(effective, field), dollars=dollars)
            if getattr(budget, field) is None:
                text += inherited
            usage = "" if used is None else (money if dollars else count)(getattr(used, field))
            cells.append({"limit": text, "used": usage})
        kind = "person" if budget.user_id else "app" if budget.target_id else "company"
        rows.append({"budget": budget, "scope": scope, "kind": kind, "cells": cells})
    return rows


# Said in words, not "0 means no limit": for an app (and the company default, when the settings set no
# limit) empty is no limit; for a person empty takes the company default.
LIMIT_HELP = (
    "Leave a limit empty for no limit on an app; a person's empty limit takes the company default, and the"
    " company default's the settings. 0, accepted from before, is shown as “No limit” too."
)


class BudgetForm(forms.Form):
    """Set the limits of a person, an app, or the company default (neither). An empty limit inherits
    (person → company default → settings; an app's empty limit means no limit). 0 is still accepted and
    means no limit too; pages show it as "No limit"."""

    username = forms.CharField(label="Person (username)", required=False, max_length=150)
    target = forms.ModelChoiceField(label="or App", queryset=Target.objects.all(), required=False,
                                    empty_label="—")  # fmt: skip
    daily_builds = WholeNumberField(label="Builds a day", required=False, help_text=LIMIT_HELP)
    monthly_builds = WholeNumberField(label="Builds a month", required=False, help_text=LIMIT_HELP)
    daily_dollars = forms.DecimalField(label="Dollars a day", min_value=0, max_digits=10, decimal_places=2,
                                       required=False, help_text=LIMIT_HELP)  # fmt: skip
    monthly_dollars = forms.DecimalField(label="Dollars a month", min_value=0, max_digits=10, decimal_places=2,
                                         required=False, help_text=LIMIT_HELP)  # fmt: skip

    def clean(self):
        data = super().clean()
        username = (data.get("username") or "").strip()
        data["user"] = None
        if username:
            data["user"] = get_user_model().objects.filter(username=username).first()
            if data["user"] is None:
                self.add_error("username", f"Nobody is called “{username}”.")
        if username and data.get("target"):
            raise forms.ValidationError("Choose a person or an app, not both (neither sets the company default).")
        return data

    def save(self) -> Budget:
        data = self.cleaned_data
        limits = {field: data.get(field) for field in budgets.FIELDS}
        budget, _ = Budget.objects.update_or_create(user=data["user"], target=data["target"], defaults=limits)
        return budget


# --- pages ---------------------------------------------------------------------------------------------


def _days(request) -> int:
    try:
        days = int(request.GET.get("days", DEFAULT_DAYS))
    except ValueError:
        return DEFAULT_DAYS
    return min(max(days, 1), 366)


@admin_required
@require_safe
def costs(request):
    return _costs_page(request, BudgetForm())


def _costs_page(request, budget_form: BudgetForm, status: int = 200):
    days = _days(request)
    start = period_start(days)
    daily = by_day(start, days)
    people, apps = by_user(start), by_target(start)
    totals = {
        "dollars": money(sum((d["dollars"] for d in daily), Decimal(0))),
        "tokens": count(sum(d["tokens"] for d in daily)),
        "calls": count(sum(d["calls"] for d in daily)),
        "builds": count(Build.objects.spent().filter(created_at__gte=start).count()),
        "replayed": Build.objects.filter(created_at__gte=start, replayed=True).count(),
    }
    defaults = budgets.default_limits()
    return render(request, "store/costs.html", {
        "days": days, "periods": PERIODS, "start": timezone.localtime(start).date(), "totals": totals,
        "chart": chart(daily), "daily": [dict(d, dollars=money(d["dollars"]), tokens=count(d["tokens"])) for d in reversed(daily)],
        "people": [dict(r, dollars=money(r["dollars"]), tokens=count(r["tokens"])) for r in people],
        "apps": [dict(r, dollars=money(r["dollars"]), tokens=count(r["tokens"])) for r in apps],
        "control": Control.get(), "budgets": budget_rows(), "budget_form": budget_form, "limit_help": LIMIT_HELP,
        "defaults": [default_limit_phrase(getattr(defaults, f), dollars=f.endswith("dollars")) for f in budgets.FIELDS],
    }, status=status)  # fmt: skip


@admin_required
@require_POST
def pause(request):
    """Pause all new builds with a message people will read, or let them start again. Builds already
    queued or running carry on."""
    control = Control.get()
    control.builds_paused = request.POST.get("paused") == "1"
    if control.builds_paused:
        control.pause_message = request.POST.get("message", "").strip()[:300]
    control.save()
    log.info("%s %s new builds", request.user, "paused" if control.builds_paused else "resumed")
    messages.info(request, "New builds are paused." if control.builds_paused else "New builds can start again.")
    return redirect(reverse("costs") + "#pause")


@admin_required
@require_POST
def save_budget(request):
    form = BudgetForm(request.POST)
    if not form.is_valid():
        return _costs_page(request, form, status=400)
    budget = form.save()
    messages.info(request, f"Saved: {budget}.")
    return redirect(reverse("costs") + "#budgets")


@admin_required
@require_POST
def delete_budget(request, pk):
    budget = get_object_or_404(Budget, pk=pk)
    budget.delete()
    messages.info(request, f"Removed: {budget}. The next level's limits apply.")
    return redirect(reverse("costs") + "#budgets")


urlpatterns = [
    path("costs/", costs, name="costs"),
    path("costs/pause/", pause, name="costs_pause"),
    path("costs/budgets/", save_budget, name="costs_budget"),
    path("costs/budgets/<int:pk>/delete/", delete_budget, name="costs_budget_delete"),
]
