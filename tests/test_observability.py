"""Watching the store run: JSON logs carrying the build id, /healthz and /readyz, and Prometheus metrics
read from the database (with the Celery queue length from a real redis-server)."""

import io
import json
import logging
import os
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from prototypes import pipeline
from prototypes.models import Build, Prototype, Revision, Target
from store.observability import BuildIdFilter, JsonFormatter
from tests.services import redis_server

pytestmark = pytest.mark.django_db
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def revision(django_user_model):
    owner = django_user_model.objects.create(username="alice")
    target = Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="tune", title="Tune", owner=owner, target=target)
    return Revision.objects.create(prototype=prototype, number=1, prompt="Add a dark mode toggle", author=owner)


@pytest.fixture
def captured():
    """What the root logger writes, through the filter and formatter the settings configure."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(BuildIdFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


# --- logs ------------------------------------------------------------------------------------------


def test_logs_written_while_a_build_runs_carry_its_id(revision, captured, monkeypatch):
    build = Build.objects.create(revision=revision)

    def engine(spec, sink):
        logging.getLogger("agents.engine").warning("cloning %s", spec.target)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr("agents.build", engine)
    pipeline.run_build(build.pk)
    logging.getLogger("store").warning("after the build")

    lines = captured()
    cloning = next(line for line in lines if line["message"] == "cloning web-player")
    assert cloning["build_id"] == build.pk and cloning["level"] == "WARNING" and cloning["logger"] == "agents.engine"
    failed = next(line for line in lines if "storing the result failed" in line["message"])
    assert failed["build_id"] == build.pk and "RuntimeError: the disk is full" in failed["exception"]
    assert "build_id" not in lines[-1]  # the id does not leak past the build
    build.refresh_from_db()
    assert build.state == Build.State.FAILED


def test_json_lines_keep_extra_fields_and_plain_lines_name_the_build():
    record = logging.LogRecord("store.x", logging.INFO, __file__, 1, "sent %d", (3,), None)
    record.status_code = 200
    token = pipeline.BUILD_ID.set(41)
    try:
        BuildIdFilter().filter(record)
    finally:
        pipeline.BUILD_ID.reset(token)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "sent 3" and entry["build_id"] == 41 and entry["status_code"] == 200
    assert entry["time"].endswith("+00:00")
    plain = logging.Formatter("%(levelname)s %(name)s%(build)s %(message)s").format(record)
    assert plain == "INFO store.x build=41 sent 3"


def test_log_format_json_makes_the_whole_process_log_json_lines(tmp_path):
    env = {**os.environ, "LOG_FORMAT": "json", "VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "store.settings"}
    code = "import logging.config, store.settings as s; logging.config.dictConfig(s.LOGGING); logging.getLogger('store').warning('ready to serve')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stderr.strip().splitlines()[-1])
    assert entry["message"] == "ready to serve" and entry["logger"] == "store" and entry["level"] == "WARNING"


# --- health ----------------------------------------------------------------------------------------


def test_healthz_says_the_process_is_alive(client):
    response = client.get("/healthz")
    assert response.status_code == 200


def test_readyz_checks_the_database_and_storage_and_skips_the_broker_without_redis(client, settings):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "checks": {"database": "ok", "broker": "skipped", "storage": "ok"}}
    assert not list((settings.MEDIA_ROOT / "readyz").iterdir())  # the probe file is gone again
    assert "no-cache" in response["Cache-Control"]


def test_readyz_fails_when_storage_cannot_be_written(client, settings, tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    settings.MEDIA_ROOT = tmp_path / "not-a-folder"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False and body["checks"]["storage"].startswith("failed: ")
    assert body["checks"]["database"] == "ok"


def test_readyz_pings_redis_and_says_when_it_is_gone(client, settings):
    with redis_server() as server:
        settings.REDIS_URL = server.url
        assert client.get("/readyz").json()["checks"]["broker"] == "ok"
        server.stop()
        started = time.monotonic()
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["broker"] == "failed: ConnectionError"
    assert time.monotonic() - started < 5  # short timeouts: a probe must answer before its own deadline


# --- metrics ---------------------------------------------------------------------------------------


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_builds_by_state_their_durations_tokens_and_cost(client, revision):
    now = timezone.now()

    def build(attempt, state, took=None, **fields):
        started = now - timedelta(seconds=took or 0) if took is not None else None
        return Build.objects.create(revision=revision, attempt=attempt, state=state, started_at=started,
                                    finished_at=now if took is not None else None, **fields)  # fmt: skip

    build(1, "queued")
    build(2, "queued")
    build(3, "running")
    build(4, "succeeded", took=45, input_tokens=1000, output_tokens=200, cache_read_tokens=5000, cost=Decimal("0.25"))
    build(5, "succeeded", took=400, input_tokens=500, output_tokens=100, cache_write_tokens=70, cost=Decimal("0.5"))
    build(6, "failed", took=2000, cost=Decimal("0.125"))

    m = scrape(client)
    assert m[("prototype_store_builds", (("state", "queued"),))] == 2
    assert m[("prototype_store_builds", (("state", "succeeded"),))] == 2
    assert m[("prototype_store_builds", (("state", "cancelled"),))] == 0
    assert m[("prototype_store_build_queue_depth", ())] == 2
    ok = (("state", "succeeded"),)
    assert m[("prototype_store_build_duration_seconds_bucket", (("le", "30.0"), *ok))] == 0
    assert m[("prototype_store_build_duration_seconds_bucket", (("le", "60.0"), *ok))] == 1
    assert m[("prototype_store_build_duration_seconds_bucket", (("le", "600.0"), *ok))] == 2
    assert m[("prototype_store_build_duration_seconds_bucket", (("le", "+Inf"), *ok))] == 2
    assert m[("prototype_store_build_duration_seconds_count", ok)] == 2
    assert m[("prototype_store_build_duration_seconds_sum", ok)] == pytest.approx(445)
    failed = (("state", "failed"),)
    assert m[("prototype_store_build_duration_seconds_bucket", (("le", "1800.0"), *failed))] == 0
    assert m[("prototype_store_build_duration_seconds_bucket", (("le", "3600.0"), *failed))] == 1
    assert m[("prototype_store_model_tokens_total", (("kind", "input"),))] == 1500
    assert m[("prototype_store_model_tokens_total", (("kind", "cache_read"),))] == 5000
    assert m[("prototype_store_model_tokens_total", (("kind", "cache_write"),))] == 70
    assert m[("prototype_store_model_cost_dollars_total", ())] == pytest.approx(0.875)
    assert not any(name == "prototype_store_celery_queue_length" for name, _ in m)  # no Redis configured


def test_metrics_read_the_celery_queue_length_from_redis(client, settings):
    with redis_server() as server:
        settings.REDIS_URL = server.url
        redis.Redis.from_url(server.url).lpush("celery", "a", "b", "c")
        assert scrape(client)[("prototype_store_celery_queue_length", ())] == 3
        server.stop()
        assert ("prototype_store_celery_queue_length", ()) not in scrape(client)  # still answers without it


def test_without_a_token_metrics_are_for_private_addresses_reached_directly(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.3.4").status_code == 200  # a Prometheus in the cluster
    assert client.get("/metrics", REMOTE_ADDR="93.184.216.34").status_code == 403
    # Behind a proxy every client seems to come from the proxy's private address: refused.
    assert (
        client.get("/metrics", REMOTE_ADDR="127.0.0.1", headers={"X-Forwarded-For": "93.184.216.34"}).status_code == 403
    )


def test_with_a_token_metrics_need_it_from_anywhere(client, settings):
    settings.METRICS_TOKEN = "s3cret-scraper"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get("/metrics", REMOTE_ADDR="93.184.216.34", headers={"Authorization": "Bearer s3cret-scraper"})
    assert response.status_code == 200 and b"prototype_store_builds" in response.content
