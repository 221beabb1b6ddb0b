"""Watching the store run: structured logs that carry build ids, liveness (/healthz) and readiness
(/readyz) checks, and Prometheus metrics (/metrics).

The metrics are read from the database when Prometheus scrapes, not counted in memory: every web process
then answers the same numbers, however many processes and machines serve the store, and a restart loses
nothing. Each scrape costs a handful of aggregate queries over the builds table.

This module is imported by the logging configuration before Django's apps are ready: models and other
heavy imports stay inside the functions that need them.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import sys
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.cache import never_cache

log = logging.getLogger(__name__)

# --- logs ------------------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from `extra=` and goes into the JSON.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "build", "build_id"}


def current_build_id() -> int | None:
    """The build this thread is running, if any (prototypes.pipeline.run_build sets it)."""
    # Looked up, not imported: the pipeline imports models, which cannot load while logging is being set
    # up; and when it was never imported, no build runs in this process.
    pipeline = sys.modules.get("prototypes.pipeline")
    return pipeline.BUILD_ID.get() if pipeline is not None else None


class BuildIdFilter(logging.Filter):
    """Adds `build_id` (None outside builds) and `build` (" build=12", or "" for plain formats)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "build_id", None) is None:
            record.build_id = current_build_id()
        record.build = f" build={record.build_id}" if record.build_id is not None else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, build_id during builds, the
    record's `extra` fields, and the exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "build_id", None) is not None:
            entry["build_id"] = record.build_id
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# --- readiness -------------------------------------------------------------------------------------


def check_database() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)


def check_broker() -> str:
    if not settings.REDIS_URL:
        return "skipped"  # the embedded default's broker is files under VAR_DIR
    client = _redis()
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_storage() -> str:
    """Writes, reads back and deletes a tiny file where artifacts are stored."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    name = default_storage.save(f"readyz/{uuid.uuid4().hex}", ContentFile(b"ready"))
    try:
        with default_storage.open(name, "rb") as handle:
            if handle.read() != b"ready":
                raise OSError("the probe file read back different bytes")
    finally:
        default_storage.delete(name)
    return "ok"


CHECKS = {"database": check_database, "broker": check_broker, "storage": check_storage}


@never_cache
def readyz(request):
    """200 when this process can serve: the database answers, the broker (Redis) answers, and storage
    takes and gives back a file; else 503 naming what failed (the details go to the log)."""
    checks, ok = {}, True
    for name, check in CHECKS.items():
        try:
            checks[name] = check()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
            log.warning("readiness check %r failed", name, exc_info=True)
            checks[name] = f"failed: {type(exc).__name__}"
            ok = False
    return JsonResponse({"ok": ok, "checks": checks}, status=200 if ok else 503)


# --- metrics ---------------------------------------------------------------------------------------

DURATION_BUCKETS = (30, 60, 120, 300, 600, 900, 1200, 1800, 3600)  # seconds; BUILD_TIMEOUT defaults to 1800
TOKEN_KINDS = ("input", "output", "cache_write", "cache_read")


def celery_queue_length() -> int:
    """Messages waiting in Celery's default queue in Redis (kombu keeps one list per priority level)."""
    from store.celery import app

    queue = app.conf.task_default_queue or "celery"
    client = _redis()
    try:
        keys = [queue] + [f"{queue}\x06\x16{priority}" for priority in (3, 6, 9)]
        return sum(client.llen(key) for key in keys)
    finally:
        client.close()


class StoreCollector:
    """Prometheus metrics computed from the database at scrape time."""

    def collect(self):
        from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        from prototypes.models import Build

        counts = dict(Build.objects.order_by().values_list("state").annotate(n=Count("pk")))
        by_state = GaugeMetricFamily("prototype_store_builds", "Builds in each state.", labels=["state"])
        for state in Build.State.values:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        yield GaugeMetricFamily(
            "prototype_store_build_queue_depth", "Builds waiting for a worker (state queued).",
            value=counts.get(Build.State.QUEUED, 0),
        )  # fmt: skip
        if settings.REDIS_URL:
            try:
                length = celery_queue_length()
            except Exception:  # noqa: BLE001 - the broker is down: leave the metric out, readiness says why
                log.warning("could not read the Celery queue length from Redis", exc_info=True)
            else:
                yield GaugeMetricFamily(
                    "prototype_store_celery_queue_length", "Messages waiting in the Celery queue in Redis.",
                    value=length,
                )  # fmt: skip

        # Every finished build, as a cumulative histogram: rate() over it gives recent durations, and
        # histogram_quantile() percentiles, in PromQL. One aggregate query, grouped by final state.
        duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        finished = Build.objects.order_by().filter(
            state__in=Build.FINAL_STATES, started_at__isnull=False, finished_at__isnull=False
        )
        aggregates = {f"le_{b}": Count("pk", filter=Q(took__lte=timedelta(seconds=b))) for b in DURATION_BUCKETS}
        rows = finished.annotate(took=duration).values("state").annotate(n=Count("pk"), total=Sum("took"), **aggregates)
        histogram = HistogramMetricFamily(
            "prototype_store_build_duration_seconds", "How long finished builds took, from start to end.",
            labels=["state"],
        )  # fmt: skip
        for row in rows:
            buckets = [(str(float(b)), row[f"le_{b}"]) for b in DURATION_BUCKETS] + [("+Inf", row["n"])]
            total = row["total"].total_seconds() if row["total"] is not None else 0.0
            histogram.add_metric([row["state"]], buckets, sum_value=max(total, 0.0))
        yield histogram

        # Usage is written on the build when it ends: these count finished builds.
        sums = Build.objects.aggregate(
            cost=Sum("cost"), **{kind: Sum(f"{kind}_tokens") for kind in TOKEN_KINDS}
        )  # fmt: skip
        tokens = CounterMetricFamily("prototype_store_model_tokens", "Model tokens used by builds.", labels=["kind"])
        for kind in TOKEN_KINDS:
            tokens.add_metric([kind], sums[kind] or 0)
        yield tokens
        yield CounterMetricFamily(
            "prototype_store_model_cost_dollars", "What builds' model calls cost, in dollars.",
            value=float(sums["cost"] or 0),
        )  # fmt: skip


def metrics_allowed(request) -> bool:
    """With METRICS_TOKEN: the bearer token must match. Without it: only a client on a loopback or
    private address talking to the server directly; a request carrying a proxy's forwarding header is
    refused, because behind a proxy every client would seem to come from the proxy's own address."""
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    if any(name in request.headers for name in ("X-Forwarded-For", "Forwarded", "X-Real-Ip")):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return address.is_loopback or address.is_private


@never_cache
def metrics(request):
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    if not metrics_allowed(request):
        if not settings.METRICS_TOKEN:
            return HttpResponse(
                "Metrics are served to private addresses only.\n", status=403, content_type="text/plain"
            )
        response = HttpResponse("Metrics need a valid bearer token.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


urlpatterns = [
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
]
