"""From models to the engine and back: builds a BuildSpec, gives the engine a sink that writes
BuildEvents and moves the build's state, then stores what the engine produced."""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

import agents
from agents.errors import describe
from agents.loop import LoopLimits
from agents.packaging import unpack_web
from agents.providers import ProviderConfig
from prototypes.models import Artifact, Build, ModelCall, Prototype, Revision, append_events
from prototypes.screenshots import store_screenshots

log = logging.getLogger(__name__)
FLUSH_SECONDS = 0.5
FLUSH_NOW = {"tool_call", "step", "verify", "judge"}
CANCEL_POLL_SECONDS = 1.0


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
    attachments = tuple(agents.Attachment(Path(a.image.path), a.media_type) for a in revision.attachments.all())
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
        result_ref=revision.result_ref,
        recipe_text=target.recipe_override or None,
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
        command_timeout=settings.COMMAND_TIMEOUT,
        max_verify_rounds=settings.AGENT_MAX_VERIFY_ROUNDS,
        today=timezone.now().date().isoformat(),
        secrets=tuple(s for s in (settings.ANTHROPIC_API_KEY, settings.SECRET_KEY) if s),
        judge=settings.AGENT_JUDGE,
    )


def run_build(build_id: int) -> None:
    """Run one build to a final state. Safe to call twice: a build that is gone, final, or already
    claimed by another worker is left alone."""
    build = Build.objects.select_related("revision__prototype__target").filter(pk=build_id).first()
    if build is None or build.is_final:
        return
    now = timezone.now()
    if not build.move(Build.State.PREPARING, started_at=now, heartbeat_at=now, worker_host=socket.gethostname()):
        return
    sink = DatabaseSink(build)
    spec = build_spec(build)
    try:
        result = agents.build(spec, sink)
        sink.flush()
        store_result(build, result)
    except Exception as exc:  # noqa: BLE001 - storing failed: the build must still end
        log.exception("build %s: storing the result failed", build_id)
        sink.flush()
        fail(build, "internal", str(exc)[:4000])
    finally:
        shutil.rmtree(spec.output_dir, ignore_errors=True)


def fail(build: Build, code: str, detail: str = "") -> bool:
    info = describe(code)
    return build.move(
        Build.State.FAILED, error_code=code, error_message=info.message, error_detail=detail,
        charged=info.family == "user",
    )  # fmt: skip


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


def store_result(build: Build, result: agents.BuildResult) -> None:
    fields = _usage_fields(result)
    if result.cancelled:
        build.move(Build.State.CANCELLED, **fields)
        return
    if result.error is not None:
        error = result.error
        build.move(
            Build.State.FAILED, error_code=error.code, error_message=error.message, error_detail=error.detail,
            charged=error.family == "user", **fields,
        )  # fmt: skip
        return
    revision = build.revision
    with transaction.atomic():
        stored = []
        for item in result.artifacts:
            artifact = Artifact(
                build=build, kind=item.kind, filename=item.filename, size=item.size, sha256=item.sha256,
                content_type=item.content_type, metadata=item.metadata,
            )  # fmt: skip
            with open(item.path, "rb") as handle:
                artifact.file.save(item.path.name, File(handle), save=False)
            artifact.save()
            stored.append(artifact)
        if result.diff:
            patch = Artifact(build=build, kind=Artifact.Kind.PATCH, filename=f"{revision.prototype.slug}-v{revision.number}.patch",
                             size=len(result.diff.encode()), sha256=hashlib.sha256(result.diff.encode()).hexdigest(),
                             content_type="text/x-diff; charset=utf-8", metadata=result.diffstat)  # fmt: skip
            patch.file.save(patch.filename, ContentFile(result.diff.encode()), save=False)
            patch.save()
        revision.base_commit = result.base_commit
        revision.result_commit = result.result_commit
        revision.diffstat = result.diffstat
        revision.summary = result.summary
        revision.save(update_fields=["base_commit", "result_commit", "diffstat", "summary"])
    for artifact in stored:
        if artifact.kind == Artifact.Kind.WEB:
            destination = preview_dir(artifact)
            try:
                unpack_web(Path(artifact.file.path), destination)
            except (ValueError, OSError) as exc:
                shutil.rmtree(destination, ignore_errors=True)
                fail(build, "packaging_failed", f"the web bundle could not be unpacked: {exc}")
                return
    if not build.move(Build.State.SUCCEEDED, **fields):
        return
    prototype = revision.prototype
    prototype.current_revision = revision
    update = ["current_revision", "updated_at"]
    if prototype.listing == Prototype.Listing.DRAFT:
        prototype.listing = Prototype.Listing.LISTED
        update.append("listing")
    if not prototype.summary:
        prototype.summary = result.summary
        update.append("summary")
    prototype.save(update_fields=update)
    # Pictures for the store come after the build is marked ready: nobody waits for them.
    for artifact in stored:
        if artifact.kind == Artifact.Kind.WEB and settings.SCREENSHOTS:
            reason = store_screenshots(revision, preview_dir(artifact), artifact.metadata.get("entry", "index.html"))
            text = f"Screenshots skipped: {reason}" if reason else "Screenshots taken for the store."
            append_events(build.pk, [("log", {"text": text})])


def preview_dir(artifact: Artifact) -> Path:
    return settings.PREVIEW_ROOT / str(artifact.pk)


def fail_stale_builds() -> int:
    """Fail builds whose worker stopped sending heartbeats ("worker lost"). Returns how many."""
    limit = timezone.now() - timedelta(seconds=settings.BUILD_HEARTBEAT_LIMIT)
    stale = Build.objects.exclude(state__in=Build.FINAL_STATES).exclude(state=Build.State.QUEUED)
    count = 0
    for build in stale.filter(heartbeat_at__lt=limit):
        count += fail(build, "worker_lost", f"no heartbeat since {build.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC")
    return count
