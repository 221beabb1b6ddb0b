"""The API build runners call (agents/runner.py; protocol in docs/runners.md), under /api/runner/.

Authenticated by the runner's token alone (`Authorization: Bearer …`), never by a session or a person's
credentials: these views are not DRF views, so no other authentication applies, and CSRF does not either
(no cookie is ever read). A runner sees only the jobs it claimed, and only what they carry: the step's
command, the repository's address, a base commit and a patch. Nothing of the store's own (secrets, other
builds, people) is ever sent.
"""

from __future__ import annotations

import json
import tempfile
from functools import wraps

from django.conf import settings
from django.core.files import File
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from agents.recipe import RUNNER_LABEL
from agents.runner import checked_path
from prototypes.runners import Runner, RunnerJob, claim_job, finish_job, store_file
from store.request_size import RUNNER_UPLOAD_BYTES

MAX_EVENTS = 50


def refuse(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


def runner_token(view):
    """Resolve the Bearer token to a usable Runner (as `request.runner`) or answer 401 saying why."""

    @csrf_exempt
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return refuse(401, "This API is for build runners: send the runner's token as 'Authorization: Bearer …'.")
        runner = Runner.find(token.strip())
        if runner is None:
            return refuse(401, "This runner token is not valid. An admin registers runners in the store's admin "
                          "(Runners) and sees the token once.")  # fmt: skip
        if runner.revoked_at is not None:
            return refuse(401, f"This runner token was revoked on {runner.revoked_at:%Y-%m-%d %H:%M} UTC. An admin "
                          "can register the machine again for a new token.")  # fmt: skip
        Runner.objects.filter(pk=runner.pk).update(last_seen_at=timezone.now(),
                                                   last_address=request.META.get("REMOTE_ADDR", "")[:64])  # fmt: skip
        request.runner = runner
        return view(request, *args, **kwargs)

    return wrapped


def its_job(view):
    """The job in the URL, if it is running on this runner; else 409 (it was re-queued, cancelled, ended)."""

    @wraps(view)
    def wrapped(request, pk: int, *args, **kwargs):
        job = RunnerJob.objects.filter(pk=pk, runner=request.runner).first()
        if job is None or job.state != RunnerJob.State.RUNNING:
            return refuse(409, "This job is no longer this runner's: it was given to another runner, cancelled, "
                          "or it ended.")  # fmt: skip
        return view(request, job, *args, **kwargs)

    return wrapped


def body(request) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {}


def asked_labels(request, data: dict) -> list[str] | JsonResponse:
    labels = data.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) and RUNNER_LABEL.fullmatch(x) for x in labels):
        return refuse(400, '\'labels\' must be a list of runner labels, like ["macos", "xcode"].')
    outside = sorted(set(labels) - set(request.runner.labels))
    if outside:
        return refuse(403, f"This runner's token is for {', '.join(request.runner.labels) or 'no labels'}, not for "
                      f"{', '.join(outside)}. An admin can register a runner with those labels.")  # fmt: skip
    return labels


@runner_token
@require_http_methods(["POST"])
def register(request):
    """A runner starting up says which labels it offers; the store checks them against the token."""
    labels = asked_labels(request, body(request))
    if isinstance(labels, JsonResponse):
        return labels
    return JsonResponse({"name": request.runner.name, "labels": labels,
                         "lease_seconds": settings.RUNNER_LEASE_SECONDS})  # fmt: skip


@runner_token
@require_http_methods(["POST"])
def claim(request):
    labels = asked_labels(request, body(request))
    if isinstance(labels, JsonResponse):
        return labels
    job = claim_job(request.runner, labels)
    if job is None:
        return HttpResponse(status=204)
    return JsonResponse(job.for_runner())


@runner_token
@require_http_methods(["POST"])
@its_job
def heartbeat(request, job: RunnerJob):
    RunnerJob.objects.filter(pk=job.pk, state=RunnerJob.State.RUNNING).update(heartbeat_at=timezone.now())
    cancel = bool(job.build_id and job.build.cancel_requested)
    return JsonResponse({"cancel": cancel, "seconds_left": max(0, int(job.seconds_left()))})


@runner_token
@require_http_methods(["POST"])
@its_job
def events(request, job: RunnerJob):
    """Log lines for the build's log. Only plain log lines: a runner cannot write a build's state."""
    items = body(request).get("events")
    if not isinstance(items, list) or len(items) > MAX_EVENTS:
        return refuse(400, f'\'events\' must be a list of at most {MAX_EVENTS} {{"kind": "log", "text": …}}.')
    for item in items:
        if isinstance(item, dict) and item.get("kind") == "log" and isinstance(item.get("text"), str):
            job.log(f"[{request.runner.name}] {item['text']}")
    RunnerJob.objects.filter(pk=job.pk, state=RunnerJob.State.RUNNING).update(heartbeat_at=timezone.now())
    return JsonResponse({"ok": True})


@runner_token
@require_http_methods(["PUT"])
@its_job
def upload(request, job: RunnerJob, name: str):
    """A file the step produced, at a path the job asked for (its artifact), as the raw request body."""
    try:
        relative = checked_path(name).as_posix()
    except ValueError as exc:
        return refuse(400, str(exc))
    wanted = [checked_path(p) for p in job.collect]
    if not any(relative == w.as_posix() or relative.startswith(w.as_posix() + "/") for w in wanted):
        return refuse(400, f"'{relative}' was not asked for; this job collects {', '.join(job.collect) or 'nothing'}.")
    # Read as a stream (never request.body, which Django bounds by DATA_UPLOAD_MAX_MEMORY_SIZE and holds
    # in memory), into a temporary file that spills to disk.
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024**2) as spool:
        size = 0
        while chunk := request.read(1 << 20):
            size += len(chunk)
            if size > RUNNER_UPLOAD_BYTES:
                return refuse(413, f"A runner uploads files of at most {RUNNER_UPLOAD_BYTES // 2**20} MiB.")
            spool.write(chunk)
        spool.seek(0)
        entry = store_file(job, relative, File(spool, name=relative.rsplit("/", 1)[-1]))
    return JsonResponse(entry)


@runner_token
@require_http_methods(["POST"])
@its_job
def finish(request, job: RunnerJob):
    data = body(request)
    if not data.get("error") and not isinstance(data.get("exit_code"), int):
        return refuse(400, "Send the command's 'exit_code' (and 'output', 'duration', 'killed_reason'), or 'error'.")
    finish_job(job, data)
    return JsonResponse({"ok": True})


urlpatterns = [
    path("api/runner/register", register, name="runner_register"),
    path("api/runner/claim", claim, name="runner_claim"),
    path("api/runner/jobs/<int:pk>/heartbeat", heartbeat, name="runner_heartbeat"),
    path("api/runner/jobs/<int:pk>/events", events, name="runner_events"),
    path("api/runner/jobs/<int:pk>/files/<path:name>", upload, name="runner_upload"),
    path("api/runner/jobs/<int:pk>/finish", finish, name="runner_finish"),
]
