"""Build runners, the store's side (the runner's is agents/runner.py; protocol in docs/runners.md).

A `Runner` is a machine an admin registered: a name, the labels it may serve (its token's scope) and the
hash of its token, shown once. A `RunnerJob` is one recipe step waiting for, or running on, a runner. The
engine sends a step through `BuildRunners.run` (the agents.runner.RunnerQueue a build is given) and waits
for its result in the database; runners claim, report and finish jobs over store/runner_api.py.

A job's runner must send heartbeats. One that stops (its machine was switched off, its process killed) loses
the job after RUNNER_LEASE_SECONDS: the job goes back to the queue once, for any runner with its labels, and
fails the second time with "runner_lost", a failure of ours that is not charged to the person.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.utils import timezone

from agents.errors import ServiceError
from agents.runner import RemoteJob, RemoteOutcome
from prototypes.models import Build, append_events
from prototypes.tokens import hash_token, new_token

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 2  # a job is re-queued once when its runner disappears, then failed
POLL_SECONDS = 0.5  # how often a build waiting for its job looks at the job's row
OUTPUT_KEPT = 1024 * 1024  # of a step's output, as the sandbox keeps it (SandboxLimits.output_bytes)


class RunnerQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class Runner(models.Model):
    """A machine that runs recipe steps for the store. Only its token's hash is kept."""

    name = models.CharField(max_length=100, unique=True)
    labels = models.JSONField(default=list, help_text="What its token may serve, like [\"macos\", \"xcode\"]: it "
                              "takes only jobs whose labels are all among these.")  # fmt: skip
    token_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=8, help_text="The token's first characters, to tell runners apart.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_address = models.CharField(max_length=64, blank=True)

    objects = RunnerQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"Runner {self.name} ({', '.join(self.labels)})"

    @classmethod
    def register(cls, *, name: str, labels, created_by=None) -> tuple[Runner, str]:
        """A new runner and its token; the token is shown once and never stored."""
        token = new_token()
        runner = cls.objects.create(name=name, labels=sorted(set(labels)), token_hash=hash_token(token),
                                    hint=token[:6], created_by=created_by)  # fmt: skip
        return runner, token

    @classmethod
    def find(cls, token: str) -> Runner | None:
        """The runner of `token`, revoked or not (the API says which), or None."""
        return cls.objects.filter(token_hash=hash_token(token)).first() if token else None

    def revoke(self) -> None:
        """The token stops working at once; a job it was running goes back to the queue (see
        `release_lost_jobs`: a revoked runner's heartbeats are refused)."""
        Runner.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.refresh_from_db()

    def may_serve(self, labels) -> bool:
        return set(labels) <= set(self.labels)


class RunnerJob(models.Model):
    """One recipe step for a runner. Its state changes only through `move`."""

    class State(models.TextChoices):
        QUEUED = "queued", "Waiting for a runner"
        RUNNING = "running", "Running on a runner"
        DONE = "done", "Done"  # the command ran; its exit code says how it went
        FAILED = "failed", "Failed"  # no result: runners lost, no runner in time, or the runner could not run it
        CANCELLED = "cancelled", "Cancelled"

    FINAL_STATES = (State.DONE, State.FAILED, State.CANCELLED)

    build = models.ForeignKey(Build, null=True, blank=True, on_delete=models.CASCADE, related_name="runner_jobs")
    step = models.CharField(max_length=16)
    command = models.TextField()
    labels = models.JSONField(default=list)
    repo_url = models.CharField(max_length=500)
    base_commit = models.CharField(max_length=64)
    patch = models.TextField(blank=True, help_text="The workspace as a binary git diff against the base commit.")
    collect = models.JSONField(default=list, help_text="Paths the runner sends back (the recipe's artifact).")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    runner = models.ForeignKey(Runner, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    attempts = models.PositiveIntegerField(default=0, help_text="How many times a runner claimed it.")
    created_at = models.DateTimeField(default=timezone.now)
    deadline_at = models.DateTimeField(help_text="The build's deadline for this step: waiting included.")
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    output = models.TextField(blank=True)
    duration = models.FloatField(default=0)
    killed_reason = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    files = models.JSONField(default=list, help_text="Uploaded files: [{path, name (in storage), size}].")

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"Runner job {self.pk} ({self.step}, {self.state})"

    def move(self, new: str, *, expected: tuple[str, ...] | None = None, **fields) -> bool:
        """Move the job to `new` from one of `expected` (default: its present state). Returns False,
        changing nothing, when the job is final or someone else (another runner, the lost-job check)
        moved it first; the object is then refreshed."""
        if self.state in self.FINAL_STATES:
            return False
        if new in self.FINAL_STATES:
            fields.setdefault("finished_at", timezone.now())
        updated = RunnerJob.objects.filter(pk=self.pk, state__in=expected or (self.state,)).update(state=new, **fields)
        self.refresh_from_db()
        return bool(updated)

    def seconds_left(self) -> float:
        return (self.deadline_at - timezone.now()).total_seconds()

    def for_runner(self) -> dict:
        """What the runner is sent when it claims the job: the step, never anything of the store's."""
        return {
            "id": self.pk, "step": self.step, "command": self.command, "labels": self.labels,
            "repo_url": self.repo_url, "base_commit": self.base_commit, "patch": self.patch,
            "collect": self.collect, "timeout": max(1, math.floor(self.seconds_left())),
            "heartbeat_seconds": max(1, settings.RUNNER_LEASE_SECONDS // 4),
        }  # fmt: skip

    def log(self, text: str) -> None:
        if self.build_id:
            append_events(self.build_id, [("log", {"text": text[:4000]})])


def claim_job(runner: Runner, labels) -> RunnerJob | None:
    """The oldest queued job this runner may take (its labels all among `labels`, which are within the
    token's), now running on it; None when there is none. Two runners can never claim one job."""
    release_lost_jobs()
    offered = set(labels) & set(runner.labels)
    for job in RunnerJob.objects.filter(state=RunnerJob.State.QUEUED).order_by("created_at")[:100]:
        if not set(job.labels) <= offered:
            continue
        now = timezone.now()
        if job.move(RunnerJob.State.RUNNING, runner=runner, attempts=job.attempts + 1, started_at=now,
                    heartbeat_at=now):  # fmt: skip
            job.log(f"Runner {runner.name} took the {job.step} step (attempt {job.attempts}).")
            return job
    return None


def release_lost_jobs() -> int:
    """Jobs whose runner sent no heartbeat for RUNNER_LEASE_SECONDS go back to the queue, once; the second
    time they fail as "runner_lost". Jobs past their deadline fail as timed out. Returns how many moved.
    Called whenever a runner asks for work and while a build waits, so it needs no periodic task."""
    now = timezone.now()
    moved = 0
    lost = RunnerJob.objects.filter(
        state=RunnerJob.State.RUNNING, heartbeat_at__lt=now - timedelta(seconds=settings.RUNNER_LEASE_SECONDS)
    ).select_related("runner")
    for job in lost:
        name = job.runner.name if job.runner else "?"
        silent = f"no heartbeat for more than {settings.RUNNER_LEASE_SECONDS} s"
        if job.attempts < MAX_ATTEMPTS:
            if job.move(RunnerJob.State.QUEUED, expected=(RunnerJob.State.RUNNING,), runner=None, heartbeat_at=None):
                job.log(f"Runner {name} stopped answering ({silent}): the step went back to the queue for another "
                        "runner.")  # fmt: skip
                moved += 1
        elif job.move(RunnerJob.State.FAILED, expected=(RunnerJob.State.RUNNING,), error_code="runner_lost",
                      error=f"runner {name} stopped answering ({silent}) on attempt {job.attempts} of "
                      f"{MAX_ATTEMPTS}"):  # fmt: skip
            job.log(f"Runner {name} stopped answering too ({silent}): the step failed.")
            moved += 1
    late = RunnerJob.objects.exclude(state__in=RunnerJob.FINAL_STATES).filter(deadline_at__lt=now)
    for job in late:
        code = "runner_unavailable" if job.state == RunnerJob.State.QUEUED else "timed_out"
        moved += job.move(RunnerJob.State.FAILED, error_code=code, error="the build's time ran out for this step")
    return moved


def finish_job(job: RunnerJob, result: dict) -> bool:
    """Record what the runner reports: the command's result, or why it could not run it."""
    if result.get("error"):
        return job.move(RunnerJob.State.FAILED, error_code="sandbox_unavailable", error=str(result["error"])[:4000])
    killed = result.get("killed_reason") or ""
    return job.move(
        RunnerJob.State.DONE, exit_code=int(result.get("exit_code", 1)), output=str(result.get("output", ""))[-OUTPUT_KEPT:],
        duration=float(result.get("duration", 0)), killed_reason=str(killed)[:32],
    )  # fmt: skip


def store_file(job: RunnerJob, path: str, upload) -> dict:
    """Keep a file the runner sent (in the store's file storage, which every worker reads)."""
    name = default_storage.save(f"runner-jobs/{job.pk}/{job.attempts}/{path}", upload)
    entry = {"path": path, "name": name, "size": default_storage.size(name)}
    with transaction.atomic():
        locked = RunnerJob.objects.select_for_update().get(pk=job.pk)
        locked.files = [f for f in locked.files if f["path"] != path] + [entry]
        locked.save(update_fields=["files"])
    return entry


def remove_files(job: RunnerJob) -> None:
    for entry in job.files:
        default_storage.delete(entry["name"])


class BuildRunners:
    """The runner queue a build's engine is given (agents.runner.RunnerQueue): each step becomes a
    RunnerJob of the build, and `run` waits for it in the database."""

    def __init__(self, build_id: int | None):
        self.build_id = build_id

    def run(self, job: RemoteJob, *, timeout: float, cancel) -> RemoteOutcome:
        row = RunnerJob.objects.create(
            build_id=self.build_id, step=job.step, command=job.command, labels=list(job.labels),
            repo_url=job.repo_url, base_commit=job.base_commit, patch=job.patch, collect=list(job.collect),
            deadline_at=timezone.now() + timedelta(seconds=timeout),
        )  # fmt: skip
        try:
            return self._wait(row, cancel)
        finally:
            # The files were copied into the workspace (or are of no use): storage keeps none of them.
            ended = RunnerJob.objects.filter(pk=row.pk).first()
            if ended is not None:
                remove_files(ended)

    def _wait(self, row: RunnerJob, cancel) -> RemoteOutcome:
        while True:
            release_lost_jobs()
            row.refresh_from_db()
            if row.state in RunnerJob.FINAL_STATES:
                break
            if cancel():
                row.move(RunnerJob.State.CANCELLED, expected=(RunnerJob.State.QUEUED, RunnerJob.State.RUNNING))
                return RemoteOutcome(137, "", 0.0, "cancelled")
            time.sleep(POLL_SECONDS)
        runner = row.runner.name if row.runner else ""
        if row.state == RunnerJob.State.DONE:
            files = {}
            for entry in row.files:
                with default_storage.open(entry["name"], "rb") as handle:
                    files[entry["path"]] = handle.read()
            return RemoteOutcome(row.exit_code if row.exit_code is not None else 1, row.output, row.duration,
                                 row.killed_reason or None, runner=runner, files=files)  # fmt: skip
        if row.error_code == "timed_out":
            return RemoteOutcome(137, row.output, row.duration, "timeout", runner=runner)
        if row.state == RunnerJob.State.CANCELLED:
            return RemoteOutcome(137, "", 0.0, "cancelled", runner=runner)
        labels = ", ".join(row.labels)
        if row.error_code == "runner_unavailable":
            raise ServiceError("runner_unavailable", f"no runner labelled {labels} took the {row.step} step in time")
        raise ServiceError(row.error_code or "runner_lost", row.error)
