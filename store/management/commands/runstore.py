"""Start the store: the web server (uvicorn, ASGI), a build worker and a preview worker beside it, stopped
together.

uvicorn rather than daphne: it slows a download down to the client's pace instead of buffering what a
slow client has not read yet, so a 1 GB artifact costs no memory (bench/download.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


def build_worker_argv(concurrency: int, *, schedule: Path | None = None) -> list[str]:
    """The build worker (with beat when given its schedule file). It consumes the default queue only: live
    preview instances are started by their own worker, so a long build never delays a "Starting..." page."""
    argv = [sys.executable, "-m", "celery", "-A", "store", "worker", "--loglevel", "INFO", "-Q", "celery",
            "-n", "builds@%h", "--concurrency", str(concurrency)]  # fmt: skip
    return [*argv, "--beat", "--schedule", str(schedule)] if schedule else argv


def preview_worker_argv(concurrency: int, *, name: str = "previews") -> list[str]:
    """The preview worker: threads, because a started app stays a child of the thread that started it and
    ends with this process (bwrap --die-with-parent); a prefork child recycled would take its apps along.
    Once ready it serves its instances on its internal route (prototypes/preview_hosts.py); several on one
    broker need distinct names here and distinct PREVIEW_HOST_NAMEs."""
    return [sys.executable, "-m", "celery", "-A", "store", "worker", "--loglevel", "INFO", "-Q", "previews",
            "-n", f"{name}@%h", "--pool", "threads", "--concurrency", str(concurrency)]  # fmt: skip


class Command(BaseCommand):
    help = "Run the web server, a build worker (with beat) and a live preview worker until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2, help="builds that may run at once")
        parser.add_argument("--preview-workers", type=int, default=settings.PREVIEW_WORKERS,
                            help="live preview instances that may be starting at once")  # fmt: skip

    def handle(self, *args, host, port, workers, preview_workers, **options):
        for folder in ("queue", "queue-done", "queue-control"):
            (settings.VAR_DIR / folder).mkdir(parents=True, exist_ok=True)
        python = sys.executable
        worker = build_worker_argv(workers, schedule=settings.VAR_DIR / "celerybeat-schedule")
        previews = preview_worker_argv(preview_workers)
        web = [python, "-m", "uvicorn", "store.asgi:application", "--host", host, "--port", str(port),
               "--no-server-header", "--log-level", "warning"]  # fmt: skip
        env = os.environ.copy()
        env["STORE_PORT"] = str(port)  # live previews are served at <label>.localhost:<port> by default
        children = [
            subprocess.Popen(worker, env=env),
            subprocess.Popen(previews, env=env),
            subprocess.Popen(web, env=env),
        ]
        self.stdout.write(self.style.SUCCESS(f"Prototype Store is running at http://{host}:{port}/  (Ctrl+C to stop)"))

        def stop(*_):
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()

        signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            self.stderr.write("A part of the store stopped; stopping the rest.")
        except KeyboardInterrupt:
            pass
        finally:
            stop()
