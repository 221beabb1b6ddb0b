"""Live preview instances: which served version runs for whom, where, and since when.

The web tier calls `open_instance` on every visit (cheap: one row, a pid check); starting, stopping and
cleaning up happen on the preview worker (`start_instance`, `stop_idle_instances`, on the `previews` queue),
whose threads are the parents of the running apps (agents/serve.py runs them in the sandbox).

Instances are cattle. A row's `running` is a claim, not a fact: the process may have crashed, or died with
its worker. So every reader checks the process (`app_alive`) and a dead one simply starts again on the next
visit. Every state change is a conditional update on (state, started_at), so concurrent visits send one
start, and a start that was overtaken (restarted, reset, stopped meanwhile) ends its own app instead of
recording it.

On disk, per host, under LIVE_PREVIEW_ROOT:
  apps/<id>-<sha256>/  the unpacked artifact, immutable, shared by all instances of the version
  data/<label>/         one instance's writable data; kept across stops until a reset
  run/<label>-<hex>/    one start of it: the socket, the log and the pid file (removed when it stops)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import shutil
import tarfile
import time
import uuid
from dataclasses import fields
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents import serve as runtime
from agents.packaging import MAX_FILES, MAX_UNPACKED_BYTES, unpack_web
from agents.recipe import SERVICES, Backend, Serve, Services
from agents.sandbox import SandboxError
from prototypes import preview_hosts
from prototypes.models import Artifact, PreviewInstance

log = logging.getLogger(__name__)
State = PreviewInstance.State
LABEL_LENGTH = 20
TOUCH_SECONDS = 10  # last_used_at is written at most this often: the proxy opens the instance on every request
FAILED_RETRY_SECONDS = 60  # a failed instance is tried again by a visit after this pause, not at every request
START_GRACE_SECONDS = 120  # beyond twice the startup timeout: a start not done by then was lost with its worker
BACKEND_POLL_SECONDS = 0.2
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def this_host() -> str:
    """The name a preview worker records on the instances it runs (PREVIEW_HOST_NAME: one per previews worker)."""
    return preview_hosts.this_host()


# --- what runs, and for whom ---------------------------------------------------------------------------


def serve_spec(artifact: Artifact) -> Serve | None:
    """The version's [serve], as recorded on its artifact at build time (pipeline.store_result), or None
    when the version cannot run live. Later edits to the target's recipe do not change how it runs."""
    record = (artifact.metadata or {}).get("serve")
    if not record:
        return None
    known = {f.name for f in fields(Serve)}
    values = {name: value for name, value in record.items() if name in known}
    values["env"] = tuple((str(name), str(value)) for name, value in values.get("env") or ())
    values["backends"] = tuple(Backend(**backend) for backend in values.get("backends") or ())
    return Serve(**values)


def serve_services(artifact: Artifact) -> Services:
    """The [services] the version was built with (Artifact.store), which its live runs start beside the app.
    Versions stored before services were recorded have none: they run without, as they always did."""
    names = (artifact.metadata or {}).get("services") or ()
    return Services(**{name: True for name in names if name in SERVICES})


def viewer_key(serve: Serve, *, user=None, share_link_id: int | None = None) -> str:
    """Whose instance a visit opens: one per version ("shared"), or per person ("u<id>"), where someone who
    came through a share link without signing in gets the link's own ("s<id>")."""
    if serve.instances == "shared":
        return "shared"
    if user is not None and user.is_authenticated:
        return f"u{user.pk}"
    if share_link_id is not None:
        return f"s{share_link_id}"
    raise ValueError("a per-person preview needs a signed-in person or a share link")


def instance_label(artifact_id: int, viewer: str) -> str:
    """The host label of the instance's origin (<label>.<LIVE_PREVIEW_DOMAIN>): stable for (artifact,
    viewer), distinct between them, and unguessable without SECRET_KEY, so the address reveals neither
    the version nor the person and cannot be walked from one instance to the next. 100 bits, [a-z2-7]."""
    message = f"preview-instance:{artifact_id}:{viewer}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:LABEL_LENGTH]


# --- the web tier ------------------------------------------------------------------------------------------


def open_instance(artifact: Artifact, viewer: str) -> PreviewInstance:
    """The instance of `artifact` for `viewer`, created on first use. Records the visit, and when the app is
    not running (never started, stopped, crashed, its worker lost, a start lost) asks the preview worker to
    start it: concurrent visits send one start between them. Returns at once; `state` says what to show."""
    now = timezone.now()
    instance, created = PreviewInstance.objects.get_or_create(
        artifact=artifact, viewer=viewer, defaults={"label": instance_label(artifact.pk, viewer), "last_used_at": now}
    )
    instance.artifact = artifact  # already loaded by the caller: its [serve] is read without another query
    if created:
        from prototypes import pairing  # pairing imports this module

        pairing.fill_pairing(instance)  # which backend versions it talks to (the owner's picks or the default)
    if instance.last_used_at is None or now - instance.last_used_at >= timedelta(seconds=TOUCH_SECONDS):
        PreviewInstance.objects.filter(pk=instance.pk).update(last_used_at=now)
        instance.last_used_at = now
        if instance.paired:  # the backends it talks to are in use as long as it is
            PreviewInstance.objects.filter(
                artifact_id__in=list(instance.paired.values()), viewer__in=("shared", instance.viewer)
            ).update(last_used_at=now)
    if _needs_start(instance, now):
        _begin_start(instance, now)
    return instance


def instance_socket(instance: PreviewInstance) -> Path | None:
    """The Unix socket to proxy to when the instance runs on this host and its process is alive, else None."""
    if instance.state != State.RUNNING or not instance.socket_path or instance.host != this_host():
        return None
    return Path(instance.socket_path) if _alive(instance.run_dir) else None


def instance_address(instance: PreviewInstance) -> str | None:
    """Where the proxy reaches a running instance: its socket when it runs on this host (checked through
    /proc, the fast path), else its host's internal route (relay://...) while that host's heartbeat is
    recent. None when it is not running, or when its process or host is gone."""
    if instance.host == this_host():
        path = instance_socket(instance)
        return str(path) if path else None
    if instance.state != State.RUNNING or not instance.socket_path:
        return None
    return preview_hosts.relay_address(instance.host, instance.pk)


def instance_lost(instance: PreviewInstance) -> bool:
    """The proxy could not reach a running instance: mark it stopped, so the next visit starts it again.
    Its run folder stays recorded for the worker to end what is left of it (the web tier never kills)."""
    return bool(
        PreviewInstance.objects.filter(pk=instance.pk, state=State.RUNNING, run_dir=instance.run_dir).update(
            state=State.STOPPED, stopped_at=timezone.now()
        )
    )


def restart_instance(instance: PreviewInstance) -> bool:
    """The owner's "Restart": start a fresh process on the same data, whatever the instance is doing."""
    instance.refresh_from_db()
    return _begin_start(instance, timezone.now())


def reset_instance(instance: PreviewInstance) -> bool:
    """The owner's "Reset data": the next start wipes the instance's data and runs the recipe's seed again."""
    instance.refresh_from_db()
    return _begin_start(instance, timezone.now(), seeded=False)


def _needs_start(instance: PreviewInstance, now) -> bool:
    if instance.state == State.STOPPED:
        return True
    if instance.state == State.FAILED:
        return instance.stopped_at is None or now - instance.stopped_at >= timedelta(seconds=FAILED_RETRY_SECONDS)
    if instance.state == State.RUNNING:
        return instance_address(instance) is None  # its process, or its host, is gone
    # Starting: unless its worker died with the start (or the message was lost), it ends well within this.
    serve = serve_spec(instance.artifact)
    patience = 2 * (serve.startup_timeout if serve else 30) + START_GRACE_SECONDS
    return instance.started_at is None or now - instance.started_at >= timedelta(seconds=patience)


def _begin_start(instance: PreviewInstance, now, **changes) -> bool:
    """Move the instance to `starting` and send its start, unless another visit (or worker) moved it first:
    the update only matches the (state, started_at) this object holds, and a start always changes both.
    Returns False, with the object refreshed, when someone else won."""
    changes = {"state": State.STARTING, "started_at": now, "host": "", "error": "", "log_tail": "", **changes}
    moved = PreviewInstance.objects.filter(pk=instance.pk, state=instance.state, started_at=instance.started_at).update(
        **changes
    )
    if not moved:
        instance.refresh_from_db()
        return False
    for name, value in changes.items():
        setattr(instance, name, value)
    from prototypes.tasks import start_instance  # tasks imports this module

    transaction.on_commit(lambda: start_instance.apply_async((instance.pk,)))  # routed to `previews`
    return True


def _alive(run_dir: str) -> bool:
    return bool(run_dir) and runtime.app_alive(Path(run_dir))


def _on_this_host(run_dir: str) -> bool:
    return bool(run_dir) and Path(run_dir).is_relative_to(settings.LIVE_PREVIEW_ROOT / "run")


# --- the preview worker ------------------------------------------------------------------------------------


def start_instance(instance_id: int) -> None:
    """Start an instance that was asked to start (task `start_instance`). Safe to deliver twice: only the
    first delivery claims the start. Ends `running` with its run folder and socket, or `failed` with a
    plain error and the app's last log lines; never leaves a process nobody's row records."""
    instance = PreviewInstance.objects.filter(pk=instance_id, state=State.STARTING, host="").first()
    if instance is None:
        return
    ticket = instance.started_at
    host = this_host()
    mine = PreviewInstance.objects.filter(pk=instance_id, state=State.STARTING, started_at=ticket)
    if not mine.filter(host="").update(host=host):
        return  # another delivery claimed it
    instance = PreviewInstance.objects.select_related("artifact").get(pk=instance_id)
    if _on_this_host(instance.run_dir):  # another host's run ends with that host (or its own clean-up)
        _retire(instance.run_dir)  # a previous run of this instance (crashed, lost, restarted): nothing of it stays
    if instance.seeded and not (settings.LIVE_PREVIEW_ROOT / "data" / instance.label).is_dir():
        instance.seeded = False  # its data stayed on the host it ran on before: it starts from its seed here
    _make_room(exclude=instance.pk)
    run_dir = None
    try:
        serve = serve_spec(instance.artifact)
        if serve is None:
            raise runtime.AppFailed("This version cannot run live: its recipe had no [serve] when it was built.", "")
        spec = app_spec(instance, serve)
        run_dir = settings.LIVE_PREVIEW_ROOT / "run" / f"{instance.label}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir(parents=True)
        app = runtime.start_app(spec, run_dir, seed=not instance.seeded and bool(spec.seed))
    except runtime.AppFailed as exc:
        _retire(str(run_dir or ""))
        mine.filter(host=host).update(state=State.FAILED, error=exc.message, log_tail=exc.log_tail,
                                      stopped_at=timezone.now(), run_dir="", socket_path="")  # fmt: skip
        return
    except (ValueError, OSError, SandboxError) as exc:  # a damaged, unsafe or removed artifact; a broken sandbox
        log.warning("preview instance %s: could not start the app", instance_id, exc_info=True)
        _retire(str(run_dir or ""))
        mine.filter(host=host).update(state=State.FAILED, error=f"The app could not be started: {exc}",
                                      stopped_at=timezone.now(), run_dir="", socket_path="")  # fmt: skip
        return
    recorded = mine.filter(host=host).update(
        state=State.RUNNING, run_dir=str(app.run_dir), socket_path=str(app.socket_path), seeded=True,
        error="", log_tail="", stopped_at=None,
    )  # fmt: skip
    if not recorded:  # restarted, reset or stopped while it started: this run is nobody's
        _retire(str(app.run_dir))


def app_spec(instance: PreviewInstance, serve: Serve) -> runtime.AppSpec:
    """What the runtime needs to start this instance: the shared unpacked app, the instance's own data
    (emptied first when it is to be seeded again: its services' database with it), its backends' sockets,
    the services the version was built with."""
    data_dir = settings.LIVE_PREVIEW_ROOT / "data" / instance.label
    if not instance.seeded:
        runtime.reset_data(data_dir)
    return runtime.AppSpec.from_serve(
        serve, app_dir=ensure_app(instance.artifact, serve), data_dir=data_dir,
        backends=backend_sockets(instance, serve), services=serve_services(instance.artifact),
    )  # fmt: skip


def backend_sockets(instance: PreviewInstance, serve: Serve) -> dict[str, Path]:
    """Start (or reuse) the backend instances this one is paired with and return their sockets by the
    variable that tells the app their URL: the version the owner picked, else the backend target's default
    branch as it is now (built first when it moved: prototypes/pairing.py)."""
    from prototypes import pairing  # pairing imports this module

    sockets: dict[str, Path] = {}
    for backend in serve.backends:
        artifact = pairing.backend_artifact(instance, backend)
        backend_serve = serve_spec(artifact)
        if backend_serve is None:
            raise runtime.AppFailed(f"The {backend.target} version paired with this one cannot run live any more.", "")
        viewer = "shared" if backend_serve.instances == "shared" else instance.viewer
        companion = open_instance(artifact, viewer)
        # Started right here when no other thread has claimed it: waiting for a task queued behind this
        # very start could take every preview thread.
        start_instance(companion.pk)
        deadline = time.monotonic() + 2 * backend_serve.startup_timeout + START_GRACE_SECONDS
        while (path := instance_socket(companion)) is None:
            if companion.state == State.FAILED or time.monotonic() > deadline:
                raise runtime.AppFailed(f"The {backend.target} backend it talks to could not start.", companion.error)
            time.sleep(BACKEND_POLL_SECONDS)
            companion.refresh_from_db()
        sockets[backend.env] = path
    return sockets


def stop_instance(instance: PreviewInstance) -> bool:
    """Stop a running instance now (idle, or over the host's cap). Its data stays for the next start."""
    tail = runtime.log_tail(Path(instance.run_dir) / "app.log") if instance.run_dir else ""  # kept for its owner
    stopped = PreviewInstance.objects.filter(pk=instance.pk, state=State.RUNNING, run_dir=instance.run_dir).update(
        state=State.STOPPED, stopped_at=timezone.now(), run_dir="", socket_path="", log_tail=tail
    )
    if stopped:
        _retire(instance.run_dir)
    return bool(stopped)


def stop_idle_instances(now=None) -> dict:
    """Periodic (task `stop_idle_instances`) on each preview host: end what is left of stopped and failed
    instances, stop running ones idle longer than their recipe's idle_minutes, then keep at most
    PREVIEW_MAX_RUNNING running, stopping the least recently used first; remove expired versions' instances.
    Returns counts."""
    now = now or timezone.now()
    mine = PreviewInstance.objects.filter(host=this_host()).select_related("artifact")
    cleaned = 0
    for instance in mine.filter(state__in=PreviewInstance.RESTARTABLE_STATES).exclude(run_dir=""):
        # Marked stopped by the proxy (instance_lost): its process may still hang on.
        left = PreviewInstance.objects.filter(pk=instance.pk, state=instance.state, run_dir=instance.run_dir)
        if left.update(run_dir="", socket_path=""):
            _retire(instance.run_dir)
            cleaned += 1
    idle = 0
    for instance in mine.filter(state=State.RUNNING):
        serve = serve_spec(instance.artifact)
        minutes = serve.idle_minutes if serve else 0
        last = instance.last_used_at or instance.started_at or now
        if now - last >= timedelta(minutes=minutes) or not _alive(instance.run_dir):
            idle += stop_instance(instance)
    return {"cleaned": cleaned, "idle": idle, "over_cap": _make_room(), "removed": remove_expired_instances()}


def remove_expired_instances() -> int:
    """Retention reaches live previews too: instances of versions whose files expired (or were deleted) go,
    with their data, and so do the unpacked apps nothing may start any more. Returns the instances removed."""
    removed = 0
    expired = PreviewInstance.objects.filter(artifact__expired_at__isnull=False, host__in=(this_host(), ""))
    for instance in expired:
        if instance.state == State.RUNNING:
            stop_instance(instance)
        elif instance.run_dir:
            _retire(instance.run_dir)
        if PreviewInstance.objects.filter(pk=instance.pk).exclude(state=State.RUNNING).delete()[0]:
            runtime.reset_data(settings.LIVE_PREVIEW_ROOT / "data" / instance.label)
            removed += 1
    apps = settings.LIVE_PREVIEW_ROOT / "apps"
    if apps.is_dir():
        # Listed before asking which are wanted: an app is unpacked only for an instance row made before it.
        folders = list(apps.iterdir())
        wanted = {app_dir(a).name for a in Artifact.objects.filter(expired_at__isnull=True, instances__isnull=False)}
        for folder in folders:
            # Half-unpacked folders (*.new) belong to a start in progress: left alone.
            if folder.name not in wanted and not folder.name.endswith(".new"):
                shutil.rmtree(folder, ignore_errors=True)
    return removed


def _make_room(exclude: int | None = None) -> int:
    """Stop this host's least recently used running instances until one more fits under the cap (or, with
    nothing excluded, until the count is within it). Returns how many stopped."""
    running = PreviewInstance.objects.filter(host=this_host(), state=State.RUNNING)
    allowed = settings.PREVIEW_MAX_RUNNING - (1 if exclude is not None else 0)
    if exclude is not None:
        running = running.exclude(pk=exclude)
    excess = running.count() - max(allowed, 0)
    stopped = 0
    if excess > 0:
        for instance in running.order_by(F("last_used_at").asc(nulls_first=True))[:excess]:
            stopped += stop_instance(instance)
    return stopped


def _retire(run_dir: str) -> None:
    """End everything a run of an instance started and remove its folder (the socket, log and pid file)."""
    if not run_dir:
        return
    folder = Path(run_dir)
    try:
        runtime.stop_app(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the unpacked app, once per artifact and host --------------------------------------------------------


def app_dir(artifact: Artifact) -> Path:
    # The content's hash too: an id can come back (a database restored from a backup) with other content.
    return settings.LIVE_PREVIEW_ROOT / "apps" / f"{artifact.pk}-{artifact.sha256[:16]}"


def ensure_app(artifact: Artifact, serve: Serve) -> Path:
    """The artifact unpacked for running, with an empty `data` folder where instances mount their own data.
    Unpacked once per host beside its final place and renamed into it, so a start never sees half an app.
    Raises ValueError (an unsafe or damaged archive) or OSError (storage or disk trouble)."""
    destination = app_dir(artifact)
    if destination.is_dir():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    fresh = destination.with_name(f"{destination.name}.{uuid.uuid4().hex}.new")
    try:
        fresh.mkdir()
        unpack_artifact(artifact, fresh)
        (fresh / serve.data).mkdir(parents=True, exist_ok=True)
        try:
            fresh.rename(destination)
        except OSError:
            if not destination.is_dir():
                raise  # not another start that unpacked it at the same moment
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return destination


def unpack_artifact(artifact: Artifact, folder: Path) -> None:
    """A web bundle or a zip/tar archive is unpacked (links, special files, '..' and size bombs refused); any
    other artifact (a .pyz, a single file) is placed in the folder under its own name."""
    name = PurePosixPath(artifact.filename).name or f"artifact-{artifact.pk}"
    lower = name.lower()
    with artifact.file.open("rb") as handle:
        if artifact.kind == Artifact.Kind.WEB or (artifact.kind == Artifact.Kind.ARCHIVE and lower.endswith(".zip")):
            unpack_web(handle, folder)
        elif artifact.kind == Artifact.Kind.ARCHIVE and lower.endswith(TAR_SUFFIXES):
            unpack_tar(handle, folder)
        else:
            with open(folder / name, "wb") as target:
                shutil.copyfileobj(handle, target, 1 << 20)


def unpack_tar(handle, folder: Path) -> None:
    """Unpack a tar archive of regular files and folders only. tarfile's "data" filter already refuses
    absolute names, '..' and links out of the folder; links and devices are refused outright here, and the
    sizes the members declare (which are what gets written) bound the total."""
    try:
        with tarfile.open(fileobj=handle, mode="r:*") as archive:
            members = archive.getmembers()
            if len(members) > MAX_FILES:
                raise ValueError(f"the archive has {len(members)} entries, more than {MAX_FILES}")
            if sum(m.size for m in members if m.isfile()) > MAX_UNPACKED_BYTES:
                raise ValueError(f"the archive unpacks to more than {MAX_UNPACKED_BYTES} bytes")
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise ValueError(f"link or special file in the archive: {member.name!r}")
            archive.extractall(folder, filter="data")
    except (tarfile.TarError, EOFError) as exc:
        raise ValueError(f"the archive is damaged: {exc}") from None
