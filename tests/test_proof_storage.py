"""What the engine proved is kept on the build: the browser check, the judge's checklist and verdict, the
result, and the before/after screenshots as evidence rows; the version's gallery is made from the kept
build's "after" pictures, and from the store's own capture only when the engine took none.

The engine's results here are sample data, written by hand (with PNG files made by Pillow), passed to
pipeline.store_result as the engine would; one test runs a real replayed build."""

import io
import zipfile
from pathlib import Path

import pytest
from django.utils import timezone
from PIL import Image

import agents
from agents.browser import Shot
from agents.errors import UserError
from agents.packaging import sha256_of
from agents.spec import ArtifactFile
from prototypes import pipeline
from prototypes.models import Build, Prototype, Revision, Screenshot, Target
from prototypes.targets import import_example

pytestmark = pytest.mark.django_db

SMOKE = {"passed": True, "skipped": "", "headline": "The browser opened 2 pages without errors.", "pages": []}
CHECKLIST = [
    {"item": "A 'Dark mode' button is in the top bar", "passed": True, "note": "The sample grade saw it."},
    {"item": "Clicking it turns the background dark", "passed": True, "note": "The sample grade saw it."},
]
JUDGE = {"accepted": True, "rounds": 1, "score": 1.0, "verdict": "Sample verdict: done.", "replayed": True}


@pytest.fixture
def target():
    return Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere",
                                 recipe_checked_at=timezone.now())  # fmt: skip


def packaging_build(owner, target, *, attempts=1) -> Build:
    """A build of a new prototype that has reached its last stage, as when the engine returns."""
    prototype = Prototype.objects.create(slug="dark-mode", title="Dark mode", owner=owner, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a dark mode toggle", author=owner,
                                       attempts=attempts)  # fmt: skip
    return Build.objects.create(revision=revision, state=Build.State.PACKAGING)


def png(path: Path, colour: str, size=(1280, 800)) -> Path:
    Image.new("RGB", size, colour).save(path, "PNG")
    return path


def sample_shots(folder: Path) -> list[Shot]:
    """Before and after, desktop and phone, of two check paths, as the engine's browser check writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    shots = []
    for moment, colour in (("before", "white"), ("after", "black")):
        for page in ("/", "/settings.html"):
            for size, pixels in (("desktop", (1280, 800)), ("phone", (780, 1688))):
                name = f"{moment}-{page.strip('/') or 'index'}-{size}.png"
                shots.append(Shot(png(folder / name, colour, pixels), page, size, moment))
    return shots


def sample_result(folder: Path, **overrides) -> agents.BuildResult:
    fields = dict(
        base_commit="a" * 40, result_commit="b" * 40, summary="Added a dark mode toggle (sample).",
        diffstat={"files": [{"path": "src/theme.js", "added": 12, "deleted": 0}], "added": 12, "deleted": 0},
        smoke=SMOKE, checklist=CHECKLIST, judge=JUDGE, screenshots=sample_shots(folder),
    )  # fmt: skip
    fields.update(overrides)
    return agents.BuildResult(**fields)


def pixel(field) -> tuple:
    with field.open("rb") as handle, Image.open(handle) as image:
        return image.convert("RGB").getpixel((0, 0))


def test_a_successful_build_keeps_its_proof_and_its_pictures_as_evidence(
    alice, target, tmp_path, django_capture_on_commit_callbacks
):
    build = packaging_build(alice, target)

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.store_result(build, sample_result(tmp_path / "out"))

    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED
    assert (build.smoke, build.checklist, build.judge) == (SMOKE, CHECKLIST, JUDGE)
    assert (build.base_commit, build.result_commit) == ("a" * 40, "b" * 40)
    assert build.summary == "Added a dark mode toggle (sample)."
    assert build.diffstat["files"][0]["path"] == "src/theme.js"
    evidence = {(s.moment, s.page, s.size): s for s in build.evidence.all()}
    assert len(evidence) == 8
    assert {key[0] for key in evidence} == {"before", "after"}
    assert {key[1] for key in evidence} == {"/", "/settings.html"}
    phone = evidence[("after", "/", "phone")]
    assert (phone.width, phone.height) == (780, 1688)
    assert phone.revision_id == build.revision_id
    with phone.thumbnail.open("rb") as handle, Image.open(handle) as small:
        assert (small.format, small.width) == ("WEBP", 240)
    assert pixel(evidence[("before", "/", "desktop")].image) == (255, 255, 255)
    # The version is this build's result, and its gallery is the engine's "after" pictures of the first page.
    revision = build.revision
    revision.refresh_from_db()
    assert revision.kept_build == build
    assert (revision.result_commit, revision.base_commit) == ("b" * 40, "a" * 40)
    gallery = {s.size: s for s in revision.screenshots.gallery()}
    assert set(gallery) == {"desktop", "phone"}
    assert all(s.build_id is None and s.moment == "" for s in gallery.values())
    assert pixel(gallery["desktop"].image) == (0, 0, 0)
    assert (gallery["phone"].width, gallery["phone"].height) == (780, 1688)
    assert gallery["desktop"].image.name != evidence[("after", "/", "desktop")].image.name  # a copy, not shared
    assert build.events.filter(kind="log", data__text="Screenshots taken for the store.").exists()


def test_a_failed_browser_check_keeps_its_findings_checklist_and_pictures(
    alice, target, tmp_path, django_capture_on_commit_callbacks
):
    build = packaging_build(alice, target)
    smoke = {"passed": False, "skipped": "", "headline": "The page threw an error on load.",
             "pages": [{"path": "/", "exceptions": ["SyntaxError: Identifier 'browserStorage' has already been "
                                                    "declared"]}]}  # fmt: skip
    judge = {"accepted": False, "rounds": 2, "score": 0.5, "verdict": "Sample verdict: not done.", "replayed": True}
    checklist = [CHECKLIST[0], {**CHECKLIST[1], "passed": False, "note": "Sample note: nothing changed."}]
    error = UserError("smoke_failed", "SyntaxError: Identifier 'browserStorage' has already been declared")

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.store_result(build, sample_result(tmp_path / "out", error=error, smoke=smoke, judge=judge,
                                                   checklist=checklist))  # fmt: skip

    build.refresh_from_db()
    assert build.state == Build.State.FAILED
    assert build.error_code == "smoke_failed"
    assert "browser" in build.error_message
    assert build.smoke["pages"][0]["exceptions"] == smoke["pages"][0]["exceptions"]
    assert build.checklist[1]["passed"] is False
    assert build.judge["score"] == 0.5
    assert build.evidence.filter(moment="after").count() == 4
    assert build.evidence.filter(moment="before").count() == 4
    # Nothing was published: no result on the version, no gallery, not the current version.
    revision = Revision.objects.get(pk=build.revision_id)
    assert revision.kept_build is None and revision.result_commit == ""
    assert not revision.screenshots.gallery().exists()
    assert Prototype.objects.get(pk=revision.prototype_id).current_revision is None


def test_a_picture_that_cannot_be_read_is_left_out_and_said_in_the_log(alice, target, tmp_path):
    build = packaging_build(alice, target)
    shots = sample_shots(tmp_path / "out")
    broken = tmp_path / "out" / "broken.png"
    broken.write_bytes(b"not a png at all")
    shots.append(Shot(broken, "/about.html", "desktop", "after"))
    shots.append(Shot(tmp_path / "out" / "missing.png", "/help.html", "desktop", "after"))

    pipeline.store_result(build, sample_result(tmp_path / "out", screenshots=shots))

    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED
    assert build.evidence.count() == 8
    [note] = build.events.filter(kind="log", data__text__startswith="Pictures left out:")
    assert "/about.html (desktop, after)" in note.data["text"]
    assert "/help.html (desktop, after)" in note.data["text"]


def web_bundle(folder: Path) -> ArtifactFile:
    """A sample web bundle: one page, as the engine packages it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "web-player-web.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("index.html", "<!doctype html><title>Sample</title><body style='background:#00f'>Sample")
    return ArtifactFile(kind="web", path=path, size=path.stat().st_size, sha256=sha256_of(path),
                        content_type="application/zip", filename=path.name, metadata={"entry": "index.html"})  # fmt: skip


def test_without_pictures_from_the_engine_the_store_takes_them_itself_for_the_gallery(
    alice, target, tmp_path, settings, django_capture_on_commit_callbacks
):
    settings.SCREENSHOTS = True
    build = packaging_build(alice, target)
    skipped = {"passed": True, "skipped": "The recipe switched the browser check off.", "pages": []}

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.store_result(build, sample_result(tmp_path / "out", screenshots=[], smoke=skipped,
                                                   artifacts=[web_bundle(tmp_path / "out")]))  # fmt: skip

    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, build.error_detail
    # Taken on the host by headless Chromium, kept as the build's "after" evidence, and shown in the store.
    assert {(s.moment, s.page, s.size) for s in build.evidence.all()} == {("after", "/", "desktop"),
                                                                          ("after", "/", "phone")}  # fmt: skip
    gallery = {s.size: s for s in build.revision.screenshots.gallery()}
    assert set(gallery) == {"desktop", "phone"}
    assert (gallery["desktop"].width, gallery["desktop"].height) == (1280, 800)
    assert pixel(gallery["desktop"].image) == (0, 0, 255)
    assert build.events.filter(kind="log", data__text="Screenshots taken for the store.").exists()


def test_a_real_replayed_build_stores_what_the_engine_proved(
    alice, eager_celery, settings, django_capture_on_commit_callbacks
):
    from prototypes.builds import create_prototype

    settings.BROWSER_CHECK = True

    player = import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)
    with django_capture_on_commit_callbacks(execute=True):
        build = create_prototype(owner=alice, target=player, idea="Add a dark mode toggle")
    build.refresh_from_db()

    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    assert build.result_commit and build.base_commit and build.summary
    assert build.diffstat["files"]
    revision = build.revision
    assert (revision.kept_build, revision.result_commit) == (build, build.result_commit)
    assert build.smoke["passed"] is True and not build.smoke["skipped"], build.smoke
    assert build.checklist and build.judge  # the sample conversation carries the judge's sample answers
    after = build.evidence.filter(moment=Screenshot.Moment.AFTER)
    assert {s.size for s in after} == {"desktop", "phone"}
    with after.first().image.open("rb") as handle:
        assert Image.open(io.BytesIO(handle.read())).format == "PNG"
    assert {s.size for s in revision.screenshots.gallery()} == {"desktop", "phone"}
