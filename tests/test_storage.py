"""Artifact storage in an S3-compatible bucket (moto's in-process S3): settings from the environment, a
real build storing its artifacts there, downloads and ranges streamed from the bucket, previews unpacked
from it on a web host that has none, and attachments handed to the engine from it."""

import hashlib
import io
import shutil

import boto3
import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from moto import mock_aws
from PIL import Image

from prototypes.builds import create_prototype
from prototypes.models import Artifact, Attachment, Build, Prototype, Revision, Target
from prototypes.pipeline import build_spec, preview_dir
from prototypes.targets import import_example
from store import settings as store_settings
from store.previews import preview_url
from tests.test_pages import make_prototype, succeed

pytestmark = pytest.mark.django_db
BUCKET = "prototype-artifacts"
ENV = {
    "STORAGE_BUCKET": BUCKET,
    "STORAGE_PREFIX": "store",
    "STORAGE_REGION": "eu-west-1",
    "STORAGE_ACCESS_KEY_ID": "testing",
    "STORAGE_SECRET_ACCESS_KEY": "testing",
}


@pytest.fixture
def s3(settings, monkeypatch):
    """The bucket, and the store's default storage pointing at it through the real settings code."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**ENV, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        settings.STORAGES = store_settings._storages()
        yield client


def keys(client) -> set[str]:
    return {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_without_a_bucket_files_stay_under_media_root(monkeypatch):
    monkeypatch.delenv("STORAGE_BUCKET", raising=False)
    assert store_settings._storages()["default"] == {"BACKEND": "django.core.files.storage.FileSystemStorage"}


def test_the_bucket_and_its_options_come_from_the_environment(monkeypatch, tmp_path):
    (tmp_path / "secret").write_text("from-a-file\n")
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STORAGE_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("STORAGE_ADDRESSING_STYLE", "path")
    monkeypatch.setenv("STORAGE_CUSTOM_DOMAIN", "files.example.com")
    monkeypatch.setenv("STORAGE_SECRET_ACCESS_KEY_FILE", str(tmp_path / "secret"))  # a Docker/Kubernetes secret
    default = store_settings._storages()["default"]
    assert default["BACKEND"] == "storages.backends.s3.S3Storage"
    assert default["OPTIONS"] | {
        "bucket_name": BUCKET, "location": "store", "endpoint_url": "http://minio:9000", "region_name": "eu-west-1",
        "access_key": "testing", "secret_key": "from-a-file", "custom_domain": "files.example.com",
        "addressing_style": "path", "file_overwrite": False,
    } == default["OPTIONS"]  # fmt: skip


def test_a_real_web_build_keeps_its_files_in_the_bucket_and_serves_them_from_there(
    s3, alice, bob, client, settings, django_capture_on_commit_callbacks, eager_celery
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    target = import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)
    with django_capture_on_commit_callbacks(execute=True):
        build = create_prototype(owner=alice, target=target, idea="Add a dark mode toggle")
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)

    bundle = build.artifacts.get(kind=Artifact.Kind.WEB)
    patch = build.artifacts.get(kind=Artifact.Kind.PATCH)
    assert {f"store/{bundle.file.name}", f"store/{patch.file.name}"} <= keys(s3)
    with pytest.raises(NotImplementedError):
        bundle.file.path  # noqa: B018 - nothing may rely on a local path
    stored = s3.get_object(Bucket=BUCKET, Key=f"store/{bundle.file.name}")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == bundle.sha256
    assert (preview_dir(bundle) / "index.html").is_file()  # unpacked by the worker for its screenshots

    client.force_login(bob)
    response = client.get(f"/artifacts/{bundle.pk}/download/")
    assert response.status_code == 200 and b"".join(response.streaming_content) == stored
    response = client.get(f"/artifacts/{bundle.pk}/download/", headers={"Range": "bytes=10-109"})
    assert response.status_code == 206 and b"".join(response.streaming_content) == stored[10:110]
    assert response["Content-Range"] == f"bytes 10-109/{len(stored)}"
    response = client.get(f"/artifacts/{bundle.pk}/download/", headers={"Range": "bytes=-16"})
    assert b"".join(response.streaming_content) == stored[-16:]
    # The change's diff is read back from the bucket too.
    revision = build.revision
    changes = client.get(f"/p/{revision.prototype.slug}/v/{revision.number}/changes/")
    assert changes.status_code == 200 and "theme.js" in changes.content.decode()

    # nginx can only send local files: with a bucket, downloads keep streaming through the store.
    settings.DOWNLOAD_ACCEL_REDIRECT = "/protected/"
    response = client.get(f"/artifacts/{bundle.pk}/download/")
    assert "X-Accel-Redirect" not in response and b"".join(response.streaming_content) == stored

    # Another web host has no unpacked copy: the first preview request unpacks it from the bucket.
    shutil.rmtree(preview_dir(bundle))
    page = client.get(preview_url(bundle, user=alice))
    assert page.status_code == 200
    assert "Dark mode" in b"".join(page.streaming_content).decode()
    assert (preview_dir(bundle) / "index.html").is_file()
    assert not [p for p in preview_dir(bundle).parent.iterdir() if p.name.endswith((".new", ".old"))]


def test_a_preview_whose_bundle_is_gone_from_the_bucket_is_a_404(s3, alice, client, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    target = Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")
    _prototype, _revision, build = make_prototype(alice, target)
    artifact = succeed(build, {})
    shutil.rmtree(preview_dir(artifact), ignore_errors=True)  # no unpacked copy on this host
    artifact.file.delete(save=False)
    client.force_login(alice)
    assert client.get(preview_url(artifact, user=alice)).status_code == 404
    assert not preview_dir(artifact).exists()


def test_images_attached_to_an_idea_reach_the_engine_as_local_files(s3, alice, settings):
    target = Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="tune", title="Tune", owner=alice, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Like this mockup", author=alice)
    build = Build.objects.create(revision=revision)
    picture = io.BytesIO()
    Image.new("RGB", (4, 3), "teal").save(picture, "PNG")
    png = picture.getvalue()
    attachment = Attachment.objects.create(
        revision=revision, image=ContentFile(png, name="mockup.png"), media_type="image/png", size=len(png)
    )  # as prototypes/builds.py does
    assert f"store/{attachment.image.name}" in keys(s3)

    spec = build_spec(build)
    [given] = spec.attachments
    assert given.path.read_bytes() == png
    assert given.path.is_relative_to(spec.output_dir)  # removed with the build's output afterwards


def test_readiness_probes_the_bucket(s3, client):
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["checks"]["storage"] == "ok"
    assert not [key for key in keys(s3) if "readyz" in key]  # the probe cleans up after itself
    s3.delete_bucket(Bucket=BUCKET)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"].startswith("failed")


def test_settings_in_the_test_run_use_the_file_system():
    assert django_settings.STORAGES["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"
