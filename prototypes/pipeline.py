"""From models to the engine and back: builds a BuildSpec, gives the engine a sink that writes
BuildEvents and moves the build's state, then stores what the engine produced."""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
import uuid
from contextvars import ContextVar
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

import agents
from agents.errors import describe
from agents.loop import LoopLimits
from agents.packaging import sha256_of, unpack_web
from agents.providers import ProviderConfig
from prototypes import attempts
from prototypes.models import Artifact, Build, ModelCall, Revision, Target, append_events
from prototypes.runners import BuildRunners
from prototypes.screenshots import store_evidence, store_screenshots
from prototypes.signing import apk_signing_key, signing_secrets

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.5
FLUSH_NOW = {"tool_call", "step", "verify", "judge"}
CANCEL_POLL_SECONDS = 1.0
# The build this thread is running: log records carry its id (the filter in store/observability.py).
BUILD_ID: ContextVar[int | None] = ContextVar("build_id", default=None)
HEARTBEAT_SECONDS = 10.0  # at most; never more than a quarter of BUILD_HEARTBEAT_LIMIT


class DatabaseSink:
    """The engine's sink: batches events into BuildEvents, writes ModelCall rows, refreshes the
    heartbeat, moves the build through its stages and tells the engine when it was cancelled."""

    def __init__(self, build: Build):
        self.build = build
        self.pending: list[tuple[str, dict]] = []
        self.last_flush = time.monotonic()
        self.last_cancel_check = 0.0
        self.cancel_seen = False

    def emit(self, kind: str, data: dict) -> None:
        if kind == "model_call":
            ModelCall.objects.create(
                build_id=self.build.pk, turn=data["turn"], model=data["model"],
                input_tokens=data["input_tokens"], output_tokens=data["output_tokens"],
                cache_write_tokens=data["cache_write_tokens"], cache_read_tokens=data["cache_read_tokens"],
                cost=Decimal(data["cost"]), latency_ms=data["latency_ms"], stop_reason=data["stop_reason"] or "",
                price_version=data["price_version"],
                purpose=data.get("purpose", ModelCall.Purpose.AGENT),
            )  # fmt: skip
        self.pending.append((kind, data))
        # Batch bursts, but never sit on an event that precedes slow work (a command, a check, a step):
        # the person must see what is happening while it happens.
        if kind in FLUSH_NOW or time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if self.pending:
            append_events(self.build.pk, self.pending)
            self.pending = []
        Build.objects.filter(pk=self.build.pk).update(heartbeat_at=timezone.now())

    def stage(self, name: str) -> None:
        self.flush()
        if not self.build.move(name):
            # Cancelled (or failed by the stale-build check) while we worked: stop at the next check.
            self.cancel_seen = True

    def cancelled(self) -> bool:
        if self.cancel_seen:
            return True
        now = time.monotonic()
        if now - self.last_cancel_check >= CANCEL_POLL_SECONDS:
            self.last_cancel_check = now
            state, requested = Build.objects.values_list("state", "cancel_requested").get(pk=self.build.pk)
            self.cancel_seen = requested or state in Build.FINAL_STATES
        return self.cancel_seen


def provider_config(target) -> ProviderConfig:
    return ProviderConfig(
        name=settings.AGENT_PROVIDER,
        model=target.model or settings.AGENT_MODEL,
        api_key=settings.ANTHROPIC_API_KEY,
        base_url=settings.ANTHROPIC_BASE_URL,
        region=settings.AGENT_REGION,
        project=settings.AGENT_PROJECT,
        recordings=settings.RECORDINGS_DIR,
        pace=settings.REPLAY_PACE,
    )


def lineage(revision: Revision) -> list[Revision]:
    """The revisions this one builds on, oldest first: its parents and, for a remix, the revision it
    was remixed from and that one's parents."""
    chain = []
    node = revision.parent if revision.parent_id else revision.prototype.forked_from
    while node is not None:
        chain.append(node)
        node = node.parent if node.parent_id else node.prototype.forked_from
    return list(reversed(chain))


def build_spec(build: Build) -> agents.BuildSpec:
    revision = build.revision
    prototype = revision.prototype
    target = prototype.target
    chain = lineage(revision)
    # The recipe comes from where the first version started; the code from the previous version's result.
    base_ref = chain[0].base_commit if chain and chain[0].base_commit else target.default_branch
    start_commit = chain[-1].result_commit if chain else None
    history = [agents.PriorRevision(r.prompt, r.summary) for r in chain]
    inputs = settings.BUILD_ROOT / f"{build.pk}-out" / "attachments"  # removed with output_dir after the build
    attachments = tuple(
        agents.Attachment(local_path(a.image, inputs, f"{a.pk}-"), a.media_type) for a in revision.attachments.all()
    )
    # Only Android targets need the key (and the first one makes the store's debug key).
    signing_key = apk_signing_key() if target.kind == Target.Kind.ANDROID else None
    return agents.BuildSpec(
        target=target.slug,
        repo_url=target.git_url,
        base_ref=base_ref,
        start_commit=start_commit,
        idea=revision.prompt,
        history=tuple(history),
        attachments=attachments,
        mirror=settings.MIRROR_ROOT / f"{target.slug}.git",
        work_dir=settings.BUILD_ROOT / str(build.pk),
        output_dir=settings.BUILD_ROOT / f"{build.pk}-out",
        result_ref=attempts.result_ref(build),
        recipe_text=target.recipe_override or None,
        egress_hosts=tuple(target.egress_hosts or ()),
        egress_networks=tuple(settings.EGRESS_PRIVATE_NETWORKS),
        provider=provider_config(target),
        sandbox=settings.SANDBOX_BACKEND,
        sandbox_ro_binds=tuple(settings.SANDBOX_RO_BINDS),
        sandbox_debug=settings.DEBUG,
        limits=LoopLimits(
            max_turns=settings.AGENT_MAX_TURNS,
            max_tokens=settings.AGENT_MAX_TOKENS,
            max_cost=Decimal(settings.AGENT_MAX_COST),
        ),
        build_timeout=settings.BUILD_TIMEOUT,
        disk_quota_bytes=settings.BUILD_DISK_QUOTA_MB * 2**20,
        max_committed_file_bytes=settings.BUILD_MAX_FILE_MB * 2**20,
        command_timeout=settings.COMMAND_TIMEOUT,
        max_verify_rounds=settings.AGENT_MAX_VERIFY_ROUNDS,
        today=timezone.now().date().isoformat(),
        secrets=tuple(s for s in (settings.ANTHROPIC_API_KEY, settings.SECRET_KEY) if s) + signing_secrets(signing_key),
        judge=settings.AGENT_JUDGE,
        browser_check=settings.BROWSER_CHECK,
        toolchain_root=settings.TOOLCHAIN_ROOT,
        apk_signing_key=signing_key,
        runners=BuildRunners(build.pk),  # recipe steps with runs_on become RunnerJobs of this build
    )


class Heartbeat:
    """Refreshes a build's heartbeat from a thread of its own while the worker runs it, whatever the build
    is doing (a long command, a long model response, a large checkout): the stale-build check then fails a
    build only when its worker is really gone (killed, its machine lost), never because it is slow."""

    def __init__(self, build_id: int):
        self.build_id = build_id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        # Inside a transaction (an eager run in a test) another connection could not see the build's row,
        # or would wait on its lock: there is no separate worker to lose then.
        if not connection.in_atomic_block:
            self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.build_id}", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _beat(self) -> None:
        every = min(HEARTBEAT_SECONDS, settings.BUILD_HEARTBEAT_LIMIT / 4)
        try:
            while not self.stop.wait(every):
                try:
                    live = Build.objects.filter(pk=self.build_id).exclude(state__in=Build.FINAL_STATES)
                    live.update(heartbeat_at=timezone.now())
                except DatabaseError:
                    log.warning("build %s: could not refresh its heartbeat", self.build_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection


def run_build(build_id: int, worker: str = "") -> None:
    """Run one build to a final state. Safe to call twice: a build that is gone, final, or already
    claimed by another worker is left alone. `worker` names the worker (default: this host's name)."""
    build = Build.objects.select_related("revision__prototype__target").filter(pk=build_id).first()
    if build is None or build.is_final:
        return
    if refusal := build.revision.prototype.target.build_refusal():
        # The target's recipe check failed after this build was queued: nothing could be built, so it
        # ends before any workspace or model call, and it is not counted against the person's budget.
        if build.move(Build.State.FAILED, error_code="recipe_invalid", error_message=describe("recipe_invalid").message,
                      error_detail=refusal, charged=False):  # fmt: skip
            choose_attempt(build)
        return
    now = timezone.now()
    with transaction.atomic():  # counting the target's running builds and starting this one go together
        if wait_for_a_slot(build):
            return
        if not build.move(Build.State.PREPARING, started_at=now, heartbeat_at=now,
                          worker_host=worker or socket.gethostname()):  # fmt: skip
            return
    sink = DatabaseSink(build)
    logging_build = BUILD_ID.set(build.pk)
    spec = None
    try:
        spec = build_spec(build)  # may copy attachments from storage: a failure here must end the build too
        with Heartbeat(build.pk):
            result = agents.build(spec, sink)
            sink.flush()
            store_result(build, result)
    except Exception as exc:  # noqa: BLE001 - storing failed: the build must still end
        log.exception("build %s: storing the result failed", build_id)
        sink.flush()
        fail(build, "internal", str(exc)[:4000])
    finally:
        if spec is not None:
            shutil.rmtree(spec.output_dir, ignore_errors=True)
        BUILD_ID.reset(logging_build)


ACTIVE_STATES = (Build.State.PREPARING, Build.State.RUNNING, Build.State.VERIFYING, Build.State.PACKAGING)
WAIT_SECONDS = 10  # how often a build waiting for a free slot of its target tries again


def wait_for_a_slot(build: Build) -> bool:
    """True when the build's target already runs `concurrency_limit` builds (0: no limit): the build then
    stays queued, its task is sent again in WAIT_SECONDS, and its log says why (once). Call it in the
    transaction that starts the build: it locks the target's row (PostgreSQL), so two workers can never
    both take the last slot; SQLite's write transactions (IMMEDIATE) are serialized anyway."""
    from prototypes.tasks import run_build as task  # tasks.py imports this module

    if task.app.conf.task_always_eager:
        return False  # builds run inside the request (debugging only): sending it again would recurse
    target = Target.objects.select_for_update().get(pk=build.revision.prototype.target_id)
    running = Build.objects.filter(revision__prototype__target=target, state__in=ACTIVE_STATES).count()
    if not target.concurrency_limit or running < target.concurrency_limit:
        return False
    if not build.events.filter(kind="log", data__text__startswith="Waiting:").exists():
        what = "1 build of this app is" if running == 1 else f"{running} builds of this app are"
        append_events(build.pk, [("log", {"text": f"Waiting: {what} running; this one starts when one ends."})])
    # For a queued build heartbeat_at is when its task was last sent: requeue_lost_builds leaves it alone.
    Build.objects.filter(pk=build.pk, state=Build.State.QUEUED).update(heartbeat_at=timezone.now())
    transaction.on_commit(lambda: task.apply_async((build.pk,), countdown=WAIT_SECONDS))
    return True


def fail(build: Build, code: str, detail: str = "") -> bool:
    info = describe(code)
    moved = build.move(
        Build.State.FAILED, error_code=code, error_message=info.message, error_detail=detail,
        charged=info.family == "user",
    )  # fmt: skip
    if moved:
        choose_attempt(build)
    return moved


def _usage_fields(result: agents.BuildResult) -> dict:
    usage = result.usage
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cost": result.cost,
        "turns": result.turns,
        "verify": result.verify,
        "replayed": not result.live_model,
    }


def _proof_fields(result: agents.BuildResult) -> dict:
    """What the build made and what proved it, kept on every build that ends, failed ones too: a failed
    browser check or a rejected judge keeps its findings, so the maker sees why."""
    return {
        "smoke": result.smoke or {},
        "checklist": result.checklist or [],
        "judge": result.judge or {},
        "base_commit": result.base_commit,
        "result_commit": result.result_commit,
        "summary": result.summary,
        "diffstat": result.diffstat,
    }


def store_result(build: Build, result: agents.BuildResult) -> None:
    fields = _usage_fields(result) | _proof_fields(result)
    # The engine's pictures are files in spec.output_dir, which run_build removes when this returns.
    if skipped := store_evidence(build, result.screenshots):
        append_events(build.pk, [("log", {"text": "Pictures left out: " + "; ".join(skipped)[:2000]})])
    if result.cancelled:
        build.move(Build.State.CANCELLED, **fields)
        choose_attempt(build)
        return
    if result.error is not None:
        error = result.error
        build.move(
            Build.State.FAILED, error_code=error.code, error_message=error.message, error_detail=error.detail,
            charged=error.family == "user", **fields,
        )  # fmt: skip
        choose_attempt(build)
        return
    revision = build.revision
    with transaction.atomic():
        stored = []
        for item in result.artifacts:
            stored.append(Artifact.store(item, serve=result.serve, services=result.services, build=build))
        if result.diff_file is not None and result.diff_file.is_file():
            # The whole diff, streamed from the file the engine wrote (result.diff holds only its head).
            # Named after the attempt when there are several, so the files of two attempts never share a name.
            name = f"{revision.prototype.slug}-v{revision.number}" + (
                f"-{build.attempt}" if revision.attempts > 1 else ""
            )
            patch = Artifact(build=build, kind=Artifact.Kind.PATCH, filename=f"{name}.patch",
                             size=result.diff_file.stat().st_size, sha256=sha256_of(result.diff_file),
                             content_type="text/x-diff; charset=utf-8", metadata=result.diffstat)  # fmt: skip
            with open(result.diff_file, "rb") as handle:
                patch.file.save(patch.filename, File(handle), save=False)
            patch.save()
    for artifact in stored:
        if artifact.kind == Artifact.Kind.WEB:
            try:
                unpack_preview(artifact)
            except (ValueError, OSError) as exc:
                fail(build, "packaging_failed", f"the web bundle could not be unpacked: {exc}")
                return
    # One transaction: the "ready" notice (sent on commit, prototypes/notifications.py) decides who may
    # hear about the prototype from its listing, so it must see the listing that keeping this build gives
    # it (attempts.keep). The revision's row is locked before the move, as attempts.choose explains.
    with transaction.atomic():
        Revision.objects.select_for_update().filter(pk=revision.pk).first()
        if not build.move(Build.State.SUCCEEDED, **fields):
            return
        attempts.choose(revision)
    if settings.SCREENSHOTS and not any(shot.moment == "after" for shot in result.screenshots):
        # The fallback: the engine's browser check took no pictures (it was switched off in the recipe, or
        # Chromium could not run in the sandbox), so the store takes them of the unpacked preview on the
        # host, as it did before the check existed, and keeps them as this build's "after" evidence; the
        # gallery is made from those like from the engine's. After the build is marked ready: nobody waits.
        for artifact in stored:
            if artifact.kind != Artifact.Kind.WEB:
                continue
            entry = artifact.metadata.get("entry", "index.html")
            if reason := store_screenshots(revision, preview_dir(artifact), entry, build=build):
                append_events(build.pk, [("log", {"text": f"Screenshots skipped: {reason}"})])
            elif Revision.objects.filter(pk=revision.pk, kept_build=build).exists():
                attempts.show(build)


def choose_attempt(build: Build) -> None:
    """After a build ended without succeeding: if it was the last attempt of its revision to end, keep the
    best that succeeded (attempts.choose). A failure here is logged and never changes how the build ended."""
    try:
        attempts.choose(build.revision)
    except Exception:  # noqa: BLE001 - the build has ended already; the owner can still keep an attempt
        log.exception("build %s: choosing among the attempts of its revision failed", build.pk)


def preview_dir(artifact: Artifact) -> Path:
    return settings.PREVIEW_ROOT / str(artifact.pk)


def unpack_preview(artifact: Artifact) -> Path:
    """Unpack a web artifact from storage into its preview folder on this host, replacing what was there.
    It is unpacked beside the folder and renamed into place, so a request never sees half a bundle.
    Raises ValueError (an unsafe or damaged bundle) or OSError (storage or disk trouble)."""
    destination = preview_dir(artifact)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fresh = destination.with_name(f"{destination.name}.{uuid.uuid4().hex}.new")
    old = destination.with_name(f"{destination.name}.{uuid.uuid4().hex}.old")
    try:
        with artifact.file.open("rb") as bundle:  # zipfile reads a seekable file as well as a path
            unpack_web(bundle, fresh)
        if destination.exists():
            destination.rename(old)
        fresh.rename(destination)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return destination


def ensure_preview(artifact: Artifact) -> Path:
    """The preview folder of a web artifact on this host, unpacked from storage on first use when missing:
    with object storage the web host is often not the worker that built it. Raises like unpack_preview."""
    destination = preview_dir(artifact)
    if destination.is_dir():
        return destination
    try:
        return unpack_preview(artifact)
    except OSError:
        if destination.is_dir():  # another request unpacked it at the same moment
            return destination
        raise


def local_path(fieldfile, directory: Path, prefix: str = "") -> Path:
    """A path on this host to a stored file: the file itself on the file system, else a copy made in
    directory (object storage has no paths)."""
    try:
        return Path(fieldfile.path)
    except NotImplementedError:
        directory.mkdir(parents=True, exist_ok=True)
        copy = directory / f"{prefix}{Path(fieldfile.name).name}"
        with fieldfile.open("rb") as source, open(copy, "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        return copy


def fail_stale_builds() -> int:
    """Fail builds whose worker stopped sending heartbeats ("worker lost"). Returns how many."""
    limit = timezone.now() - timedelta(seconds=settings.BUILD_HEARTBEAT_LIMIT)
    stale = Build.objects.exclude(state__in=Build.FINAL_STATES).exclude(state=Build.State.QUEUED)
    count = 0
    for build in stale.filter(heartbeat_at__lt=limit):
        count += fail(build, "worker_lost", f"no heartbeat since {build.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC")
    return count


def requeue_lost_builds() -> int:
    """Send the task again for builds still queued QUEUED_RESEND_AFTER seconds after it was last sent:
    its message may have been lost with the broker (a restart without persistence) or never sent (the
    broker was down when the person asked). A message merely waiting behind others gets a duplicate, which
    is harmless: only one delivery can move the build out of `queued`. While a build is queued its
    `heartbeat_at` holds when its task was last sent again (the stale-build check skips queued builds).
    Returns how many were sent."""
    from prototypes.builds import send_build  # builds.py sends through tasks.py, which imports this module

    now = timezone.now()
    limit = now - timedelta(seconds=settings.QUEUED_RESEND_AFTER)
    waiting = Build.objects.filter(state=Build.State.QUEUED, cancel_requested=False).filter(
        Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True, created_at__lt=limit)
    )
    count = 0
    for build_id in waiting.order_by("created_at").values_list("pk", flat=True):
        if Build.objects.filter(pk=build_id, state=Build.State.QUEUED).update(heartbeat_at=now):
            log.info("build %s: still queued, sending its task again", build_id)
            count += send_build(build_id)
    return count
