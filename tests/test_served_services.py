"""Live previews of versions whose recipe has [services]: the build records them on its artifact (beside its
[serve]), and every instance of the version runs with its own PostgreSQL inside its sandbox, its database in
the instance's data (seeded, kept across restarts, wiped by "Reset data"), stopped with the app.

Real engine, real sandbox, real PostgreSQL (Debian's package), a tiny app written here that keeps its
greetings in the database."""

import os
import subprocess
from pathlib import Path

import pytest

import agents
from agents import services as services_module
from agents.engine import baseline_commit, build_baseline
from agents.recipe import Services
from agents.spec import ArtifactFile, BaselineSpec
from prototypes import instances, tasks
from prototypes.instances import reset_instance, restart_instance, serve_services, stop_instance
from prototypes.models import Artifact, Build, PreviewInstance, Prototype, Revision, Target
from prototypes.pipeline import store_result
from tests.agents.conftest import scratch_dir
from tests.agents.test_serve_services import APP, SEED
from tests.test_instances import get, processes_of, sandbox_record, start

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        services_module.postgres_bin() is None or not os.path.exists("/usr/lib/python3/dist-packages/psycopg2"),
        reason="needs Debian's postgresql and python3-psycopg2 packages (CI installs them)",
    ),
]
State = PreviewInstance.State
POSTGRES = Services(postgresql=True)

RECIPE = f"""\
[prototype]
name = "Greetings"
kind = "backend"

[services]
postgresql = true

[build]
command = "mkdir -p dist && tar -czf dist/greetings.tar.gz greetings.py"

[test]
command = "true"

[artifact]
kind = "archive"
path = "dist/greetings.tar.gz"

[serve]
command = "/usr/bin/python3 -u greetings.py"
port = 8080
seed = '''{SEED}'''
instances = "per-person"
"""


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """The start_instance tasks sent; the tests run the unit of work directly."""
    ids: list[int] = []
    monkeypatch.setattr(tasks.start_instance, "apply_async", lambda args, **kw: ids.append(args[0]))
    return ids


@pytest.fixture
def cleanup():
    yield
    for run_dir in PreviewInstance.objects.exclude(run_dir="").values_list("run_dir", flat=True):
        instances.runtime.stop_app(Path(run_dir))


@pytest.fixture(scope="module")
def built() -> agents.BuildResult:
    """The greetings app's default branch built by the real engine, the way a version is built."""
    work = scratch_dir("greetings-")
    repo = work / "repo"
    repo.mkdir()
    (repo / "prototype.toml").write_text(RECIPE)
    (repo / "greetings.py").write_text(APP)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "Test",
           "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    for argv in (["init", "-q", "-b", "main"], ["add", "--all"], ["commit", "-q", "-m", "The app"]):
        subprocess.run(["git", *argv], cwd=repo, env=env, check=True, capture_output=True)
    mirror = work / "mirror.git"
    result = build_baseline(
        BaselineSpec(
            target="greetings",
            repo_url=str(repo),
            commit=baseline_commit(str(repo), mirror, "main"),
            mirror=mirror,
            work_dir=work / "work",
            output_dir=work / "out",
        )  # fmt: skip
    )
    assert result.error is None, result.error
    return result


def packaging_build(owner) -> Build:
    target, _ = Target.objects.get_or_create(
        slug="greetings", defaults={"name": "Greetings", "kind": "backend", "git_url": "/nowhere"}
    )
    prototype = Prototype.objects.create(slug=f"greetings-{Prototype.objects.count()}", title="Greetings",
                                         owner=owner, target=target, visibility="company")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Count greetings", author=owner)
    build = Build.objects.create(revision=revision)
    for state in ["preparing", "running", "verifying", "packaging"]:
        build.move(state)
    return build


def stored(owner, result: agents.BuildResult) -> Artifact:
    """The version as the pipeline stores a finished build."""
    build = packaging_build(owner)
    store_result(build, result)
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, build.error_detail
    return build.artifacts.exclude(kind=Artifact.Kind.PATCH).get()


def postgres_left(record: dict) -> list[int]:
    return [pid for pid, line in processes_of(record).items() if line.startswith((b"postgres", b"/usr/lib/postgresql"))]


def test_a_build_records_its_services_on_its_artifact_beside_its_serve(alice, built):
    artifact = stored(alice, built)

    assert artifact.metadata["services"] == ["postgresql"]
    assert serve_services(artifact) == POSTGRES
    assert instances.serve_spec(artifact).command == "/usr/bin/python3 -u greetings.py"


def test_a_version_that_cannot_run_live_records_no_services(alice, built, tmp_path):
    path = tmp_path / "greetings.tar.gz"
    path.write_bytes(b"not served")
    item = ArtifactFile(kind="archive", path=path, size=10, sha256="0" * 64, content_type="application/gzip",
                        filename="greetings.tar.gz")  # fmt: skip

    artifact = Artifact.store(item, serve=None, services=POSTGRES, build=packaging_build(alice))

    assert "services" not in artifact.metadata and "serve" not in artifact.metadata


def test_versions_stored_before_services_were_recorded_run_without_them(alice, built):
    artifact = stored(alice, built)
    del artifact.metadata["services"]
    artifact.save()
    instance = PreviewInstance.objects.create(artifact=artifact, viewer="u1", label="older", seeded=True)

    spec = instances.app_spec(instance, instances.serve_spec(artifact))

    assert serve_services(artifact) == Services() and not spec.services


def test_each_persons_instance_runs_its_own_seeded_database_kept_on_restart_wiped_on_reset_stopped_with_it(
    alice, bob, built, sent, cleanup
):
    artifact = stored(alice, built)

    mine = start(artifact, f"u{alice.pk}")
    assert mine.state == State.RUNNING, (mine.error, mine.log_tail)
    assert get(mine) == (200, '{"greetings": 2}')  # the recipe's seed wrote to the instance's database
    assert get(mine, "/", "POST") == (201, '{"greetings": 3}')
    theirs = start(artifact, f"u{bob.pk}")
    assert get(theirs) == (200, '{"greetings": 2}')  # bob's own database: alice's greeting is not in it

    restart_instance(mine)  # a fresh process on the same data
    instances.start_instance(mine.pk)
    mine.refresh_from_db()
    assert get(mine) == (200, '{"greetings": 3}')

    assert reset_instance(mine)  # "Reset data": the database goes with the rest, and the seed runs again
    instances.start_instance(mine.pk)
    mine.refresh_from_db()
    assert mine.state == State.RUNNING and get(mine) == (200, '{"greetings": 2}')

    record = sandbox_record(mine)
    assert postgres_left(record), "PostgreSQL does not run in the instance's sandbox"
    assert stop_instance(mine)
    assert postgres_left(record) == [], "PostgreSQL outlived the instance"
