"""Catalog speed with a large store: 10,000 prototypes and 100,000 comments.

Serves the store with daphne on loopback and measures, in the same run, requests per second of
- the catalog page (signed in, newest first), and of the trending sort, and of a search,
- a minimal Django view on the same server (/healthz): the baseline,
and prints each as a ratio of the baseline, plus the SQL queries one catalog page takes.

    .venv/bin/python bench/catalog.py          # BENCH_PROTOTYPES, BENCH_COMMENTS, BENCH_SECONDS to change
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOTYPES = int(os.environ.get("BENCH_PROTOTYPES", "10000"))
COMMENTS = int(os.environ.get("BENCH_COMMENTS", "100000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed() -> str:
    """Fill the database and return a session cookie for a signed-in person."""
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from prototypes.models import Prototype, Revision, Target
    from store.models import Comment, Reaction

    call_command("migrate", verbosity=0)
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"person{n}", first_name=f"Person {n}") for n in range(50)]
    )
    target = Target.objects.create(slug="web-player", name="Web Player", git_url="/nowhere")
    rng = random.Random(7)
    words = "player dark mode timer queue shuffle lyrics podcast episode search share offline".split()
    prototypes = Prototype.objects.bulk_create(
        [
            Prototype(slug=f"p{n}", title=f"{rng.choice(words).title()} {rng.choice(words)} {n}",
                      summary=" ".join(rng.choices(words, k=12)), owner=rng.choice(users), target=target,
                      listing="listed", visibility="company")
            for n in range(PROTOTYPES)
        ],
        batch_size=2000,
    )  # fmt: skip
    revisions = Revision.objects.bulk_create(
        [Revision(prototype=p, number=1, prompt=" ".join(rng.choices(words, k=8)), author=p.owner) for p in prototypes],
        batch_size=2000,
    )
    for prototype, revision in zip(prototypes, revisions, strict=True):
        prototype.current_revision = revision
    Prototype.objects.bulk_update(prototypes, ["current_revision"], batch_size=2000)
    Comment.objects.bulk_create(
        [
            Comment(prototype=p, revision=p.current_revision, author=rng.choice(users), body="Nice idea")
            for p in rng.choices(prototypes, k=COMMENTS)
        ],
        batch_size=5000,
    )
    Reaction.objects.bulk_create(
        [Reaction(prototype=p, user=u, kind="like") for p in prototypes[:5000] for u in users[:3]], batch_size=5000
    )
    viewer = users[0]
    session = SessionStore()
    session.update({"_auth_user_id": str(viewer.pk), "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                    "_auth_user_hash": viewer.get_session_auth_hash()})  # fmt: skip
    session.create()
    return f"sessionid={session.session_key}"


def queries_per_page(cookie: str) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.cookies["sessionid"] = cookie.split("=", 1)[1]
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/", HTTP_HOST="127.0.0.1").status_code == 200
    return len(captured)


def load(port: int, path: str, cookie: str) -> tuple[float, float]:
    """Closed-loop clients with keep-alive for SECONDS: requests per second and p99 latency (ms)."""
    latencies: list[float] = []
    stop = time.monotonic() + SECONDS
    lock = threading.Lock()
    failures = []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            conn.request("GET", path, headers={"Cookie": cookie})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(response.status)
                break
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{path} answered {failures[0]}")
    latencies.sort()
    return len(latencies) / (time.monotonic() - began), latencies[int(0.99 * len(latencies))] * 1000


def main() -> int:
    var = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    os.environ.update({"VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "store.settings", "DEBUG": "false"})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    started = time.monotonic()
    cookie = seed()
    print(
        f"seeded {PROTOTYPES} prototypes and {COMMENTS} comments in {time.monotonic() - started:.0f} s", file=sys.stderr
    )
    per_page = queries_per_page(cookie)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                               "store.asgi:application"], cwd=ROOT, env=os.environ.copy(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("daphne did not start") from None
                time.sleep(0.2)
        load(port, "/healthz", cookie)  # warm up
        results = {
            "minimal Django view (/healthz), baseline": load(port, "/healthz", cookie),
            "catalog, newest": load(port, "/", cookie),
            "catalog, trending": load(port, "/?sort=trending", cookie),
            "catalog, search": load(port, "/?q=dark+timer", cookie),
        }
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(var, ignore_errors=True)

    base = results["minimal Django view (/healthz), baseline"][0]
    print(f"\n{PROTOTYPES} prototypes, {COMMENTS} comments, SQLite, daphne, {CLIENTS} clients, {SECONDS:.0f} s each")
    print(f"{'page':44} {'req/s':>8} {'p99 ms':>8} {'vs baseline':>12}")
    for name, (rate, p99) in results.items():
        print(f"{name:44} {rate:>8.1f} {p99:>8.1f} {rate / base:>11.2f}x")
    print(f"\nSQL queries for one catalog page: {per_page} (the same for 10 or 10,000 prototypes: tests/test_store.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
