"""Start the store: the web server (uvicorn, ASGI) and a build worker beside it, stopped together.

uvicorn rather than daphne: it slows a download down to the client's pace instead of buffering what a
slow client has not read yet, so a 1 GB artifact costs no memory (bench/download.py)."""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server and a Celery worker (with the stale-build check) until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2, help="builds that may run at once")

    def handle(self, *args, host, port, workers, **options):
        for folder in ("queue", "queue-done", "queue-control"):
            (settings.VAR_DIR / folder).mkdir(parents=True, exist_ok=True)
        python = sys.executable
        worker = [python, "-m", "celery", "-A", "store", "worker", "--beat", "--loglevel", "INFO",
                  "--concurrency", str(workers), "--schedule", str(settings.VAR_DIR / "celerybeat-schedule")]  # fmt: skip
        web = [python, "-m", "uvicorn", "store.asgi:application", "--host", host, "--port", str(port),
               "--no-server-header", "--log-level", "warning"]  # fmt: skip
        env = os.environ.copy()
        children = [subprocess.Popen(worker, env=env), subprocess.Popen(web, env=env)]
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
