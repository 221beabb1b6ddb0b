"""Every setting read from the environment is documented in docker/.env.example."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_environment_variable_is_listed_in_the_env_example():
    source = (ROOT / "store" / "settings.py").read_text()
    read = set(re.findall(r"\b(?:env|env_bool|env_int|env_list|secret)\(\s*\"([A-Z_]+)\"", source))
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / "docker" / ".env.example").read_text(), re.M))
    assert read, "no settings found: the pattern is out of date"
    assert read - documented == set()
    assert documented - read == set()


def test_a_test_run_keeps_its_state_out_of_the_checkout(settings):
    assert settings.VAR_DIR != ROOT / "var"
    assert not str(settings.DATABASES["default"]["TEST"]["NAME"]).startswith(str(ROOT))


def test_the_store_refuses_to_start_with_the_removed_docker_sandbox(tmp_path):
    env = {
        **os.environ,
        "SANDBOX_BACKEND": "docker",
        "VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "store.settings",
    }
    started = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert started.returncode != 0
    assert "SANDBOX_BACKEND=docker: the docker sandbox backend was removed" in started.stderr, started.stderr


def test_the_embedded_broker_is_polled_often_enough_for_a_live_preview_start(settings):
    # A live preview's start is a task: with the filesystem broker a worker only sees it at its next poll,
    # which a person waits for on the "Starting" page (kombu's default is 1 s; bench/preview.py measured it
    # as most of the store's share of a cold start). Read back through kombu, so the option must reach it.
    if settings.CELERY_BROKER_URL != "filesystem://":
        import pytest

        pytest.skip("REDIS_URL is set: Redis delivers a task as soon as it is sent")
    from store.celery import app

    with app.connection_for_read() as connection:
        interval = connection.transport.polling_interval
    assert interval <= 0.1, f"a worker polls the embedded broker every {interval} s"


def test_the_judge_is_on_unless_agent_judge_says_off(tmp_path):
    # Read in a fresh process, as the store reads it at start-up: this run's own settings are already loaded.
    def judge_setting(value: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "AGENT_JUDGE"}
        env.update(VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="store.settings")
        if value is not None:
            env["AGENT_JUDGE"] = value
        code = "from django.conf import settings; print(settings.AGENT_JUDGE)"
        shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        return shown.stdout.strip()

    assert judge_setting(None) == "True"
    assert judge_setting("off") == "False"
    assert judge_setting("on") == "True"
