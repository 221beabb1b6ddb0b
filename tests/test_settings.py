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
