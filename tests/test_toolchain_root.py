"""The store hands its toolchain folder (TOOLCHAIN_ROOT) to every build it runs: prototypes' builds and the
baseline builds of a target's default branch (agents/toolchains.py)."""

from pathlib import Path

import pytest
from django.conf import settings

import agents
from agents.errors import ServiceError
from agents.serve import AppFailed
from prototypes import builds, pairing
from prototypes.models import Baseline
from prototypes.pipeline import build_spec
from prototypes.targets import import_example

pytestmark = pytest.mark.django_db


@pytest.fixture
def podcast_api():
    return import_example(settings.EXAMPLES_DIR / "targets" / "podcast-api", settings.TARGET_REPO_ROOT)


def test_the_toolchain_folder_defaults_to_var_toolchains():
    assert Path(settings.TOOLCHAIN_ROOT) == settings.VAR_DIR / "toolchains"


def test_a_prototypes_build_gets_the_toolchain_folder(alice, podcast_api, settings, monkeypatch, tmp_path):
    settings.TOOLCHAIN_ROOT = tmp_path / "toolchains"
    monkeypatch.setattr(builds, "_enqueue", lambda build: None)
    build = builds.create_prototype(owner=alice, target=podcast_api, idea="Count the episodes")

    assert build_spec(build).toolchain_root == tmp_path / "toolchains"


def test_a_baseline_build_gets_the_toolchain_folder_and_says_what_is_missing(podcast_api, settings, monkeypatch,
                                                                             tmp_path):  # fmt: skip
    settings.TOOLCHAIN_ROOT = tmp_path / "toolchains"
    asked = []

    def build_baseline(spec):
        asked.append(spec)
        return agents.BuildResult(error=ServiceError("toolchain_missing", "node 22 is not installed on the workers"))

    monkeypatch.setattr(agents, "build_baseline", build_baseline)
    baseline = Baseline.objects.create(target=podcast_api, commit="a" * 40)

    with pytest.raises(AppFailed) as caught:
        pairing._build(baseline)

    assert [spec.toolchain_root for spec in asked] == [tmp_path / "toolchains"]
    assert "do not have yet" in str(caught.value)
    baseline.refresh_from_db()
    assert "node 22 is not installed on the workers" in baseline.error
