"""Catalog speed as the store grows: 1,000, 10,000 and 100,000 prototypes, ten comments each on average.

For each size (and an empty store, the floor): a fresh SQLite database is filled (raw executemany in batches, so 100,000 prototypes and a
million comments take seconds), the store is served by uvicorn on loopback (the server `make run` uses),
and requests per second are measured, in the same run, for
- a minimal Django view on the same server (/healthz): the baseline,
- the catalog signed in: newest first, the trending sort, a search,
each printed as a ratio of that size's baseline, with the SQL queries one catalog page takes.

Goal (issue 16): every ratio >= 0.5 at 10k and at 100k, and flat: each 100k ratio >= 0.8 x its 1k ratio.
The last line is `met` or `not met`.

    .venv/bin/python bench/catalog.py      # BENCH_SIZES=0,1000,10000,100000 BENCH_SECONDS=5 BENCH_CLIENTS=8

BENCH_ROOT=<another checkout> runs the same measurement on that code (how the "before" numbers were taken).
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(os.environ.get("BENCH_ROOT", Path(__file__).resolve().parents[1]))  # another checkout: "before"
# 0: the same pages over an empty store, the floor that the page's own work (session, sign-in, permissions,
# the ORM building its queries, the base template) sets whatever the catalog holds
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "0,1000,10000,100000").split(",")]
COMMENTS_EACH = 10
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
PAGES = {
    "newest": "/",
    "trending": "/?sort=trending",
    "search": "/?q=dark+timer",
}
GOAL, FLAT = 0.5, 0.8
WORDS = "player dark mode timer queue shuffle lyrics podcast episode search share offline".split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def django_setup(var: Path) -> None:
    os.environ.update(
        {
            "VAR_DIR": str(var),
            "DJANGO_SETTINGS_MODULE": "store.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-catalog-" + "x" * 40,
        }
    )  # one key: the server accepts our session
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def fill(size: int) -> str:
    """Fill the (migrated, empty) database with `size` prototypes; return a signed-in session cookie."""
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection, transaction

    from prototypes.models import Prototype, Revision, Target

    rng = random.Random(7)
    now = datetime.now(UTC)
    counted = {f.name for f in Prototype._meta.fields} >= {"reaction_count", "comment_count", "trending_score"}
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"person{n}", first_name=f"Person {n}") for n in range(50)]
    )
    target = Target.objects.create(slug="web-player", name="Web Player", git_url="/nowhere")
    comments = [rng.randrange(2 * COMMENTS_EACH + 1) for _ in range(size)]  # 10 on average
    liked = [3 if n % 2 else 0 for n in range(size)]
    week = max(0, size - 2000)  # the newest 2,000 had their activity this week
    batch = 5000
    with transaction.atomic():
        for start in range(0, size, batch):
            prototypes = []
            for n in range(start, min(size, start + batch)):
                counts = {"reaction_count": liked[n], "comment_count": comments[n],
                          "trending_score": liked[n] + comments[n] if n >= week else 0} if counted else {}  # fmt: skip
                prototypes.append(Prototype(
                    slug=f"p{n}", title=f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {n}",
                    summary=" ".join(rng.choices(WORDS, k=12)), owner=rng.choice(users), target=target,
                    listing="listed", visibility="company", created_at=now - timedelta(minutes=size - n), **counts,
                ))  # fmt: skip
            prototypes = Prototype.objects.bulk_create(prototypes)
            Revision.objects.bulk_create(
                [Revision(prototype=p, number=1, prompt=" ".join(rng.choices(WORDS, k=8)), author=p.owner)
                 for p in prototypes]
            )  # fmt: skip
    users = [user.pk for user in users]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE prototypes_prototype SET current_revision_id ="
            " (SELECT id FROM prototypes_revision WHERE prototype_id = prototypes_prototype.id)"
        )
        cursor.execute("SELECT id FROM prototypes_prototype ORDER BY id")
        prototype_ids = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT prototype_id, id FROM prototypes_revision")
        revision_of = dict(cursor.fetchall())
        rows = []
        for index, pk in enumerate(prototype_ids):
            created = now - (timedelta(days=1) if index >= week else timedelta(days=60))
            rows += [(pk, revision_of[pk], rng.choice(users), "Nice idea", created) for _ in range(comments[index])]
            if len(rows) >= 50_000 or index == size - 1:
                cursor.executemany(
                    "INSERT INTO store_comment (prototype_id, revision_id, author_id, body, addressed, hidden, created_at)"
                    " VALUES (%s, %s, %s, %s, 0, 0, %s)",
                    rows,
                )
                rows = []
        cursor.executemany(
            "INSERT INTO store_reaction (prototype_id, user_id, kind, created_at) VALUES (%s, %s, 'like', %s)",
            [(pk, users[k], now) for index, pk in enumerate(prototype_ids) for k in range(liked[index])],
        )
    viewer = get_user_model().objects.get(pk=users[0])
    session = SessionStore()
    session.update({"_auth_user_id": str(viewer.pk), "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                    "_auth_user_hash": viewer.get_session_auth_hash()})  # fmt: skip
    session.create()
    return session.session_key


def queries_per_page(session_key: str) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.cookies["sessionid"] = session_key
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/", HTTP_HOST="127.0.0.1").status_code == 200
    return len(captured)


def load(port: int, path: str, cookie: str) -> float:
    """Closed-loop clients with keep-alive for SECONDS: requests per second."""
    done = [0] * CLIENTS
    failures = []
    stop = time.monotonic() + SECONDS

    def client(slot: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < stop:
            conn.request("GET", path, headers={"Cookie": cookie})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(f"{response.status} {response.getheader('Location', '')}")
                return
            done[slot] += 1

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(CLIENTS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{path} answered {failures[0]}")
    return sum(done) / (time.monotonic() - began)


def serve(var: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = os.environ.copy() | {"VAR_DIR": str(var)}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "store.asgi:application", "--host", "127.0.0.1",
                               "--port", str(port), "--no-server-header", "--log-level", "warning"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, port
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("uvicorn did not start") from None
            time.sleep(0.2)


def measure(size: int, template: Path, work: Path) -> dict:
    var = work / f"size-{size}"
    var.mkdir()
    from django.db import connection

    connection.close()  # the last connection to close writes the WAL back into the file copied
    shutil.copy(template / "store.sqlite3", var / "store.sqlite3")
    connection.settings_dict["NAME"] = var / "store.sqlite3"  # this size's copy of the migrated database
    started = time.monotonic()
    session_key = fill(size)
    filled = time.monotonic() - started
    per_page = queries_per_page(session_key)
    connection.close()
    server, port = serve(var)
    cookie = f"sessionid={session_key}"
    try:
        load(port, "/healthz", cookie)  # warm up the server
        for path in PAGES.values():  # and fill the card cache, as a running store has it
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", path, headers={"Cookie": cookie})
            conn.getresponse().read()
        rates = {"baseline": load(port, "/healthz", cookie)}
        for name, path in PAGES.items():
            rates[name] = load(port, path, cookie)
    finally:
        server.terminate()
        server.wait(10)
    print(f"  {size:>7} prototypes: filled in {filled:.0f} s, {per_page} SQL queries per page", file=sys.stderr)
    return {"rates": rates, "queries": per_page}


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    template = work / "template"
    template.mkdir()
    try:
        django_setup(template)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        results = {size: measure(size, template, work) for size in SIZES}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nSQLite, uvicorn, {CLIENTS} clients, {SECONDS:.0f} s per row; req/s (ratio to /healthz in the same server)"
    )
    print(f"{'prototypes':>10} {'queries':>8} {'/healthz':>9} " + " ".join(f"{name:>16}" for name in PAGES))
    for size, result in results.items():
        rates = result["rates"]
        cells = " ".join(f"{rates[name]:>8.1f} ({rates[name] / rates['baseline']:.2f}x)" for name in PAGES)
        print(f"{size:>10} {result['queries']:>8} {rates['baseline']:>9.1f} {cells}")

    def ratio(size, name):
        return results[size]["rates"][name] / results[size]["rates"]["baseline"]

    print(
        f"\ngoal: every ratio >= {GOAL} at 10,000 and 100,000 prototypes, and each 100k ratio >= {FLAT}x its 1k ratio"
    )
    checks = [ratio(size, name) >= GOAL for size in SIZES if size >= 10_000 for name in PAGES]
    if 1000 in results and 100_000 in results:
        checks += [ratio(100_000, name) >= FLAT * ratio(1000, name) for name in PAGES]
        flat = ", ".join(f"{name} {ratio(100_000, name) / ratio(1000, name):.2f}" for name in PAGES)
        print(f"flat: each page's 100k ratio / its 1k ratio: {flat}")
    full = {1000, 10_000, 100_000} <= set(SIZES)
    print("met" if full and all(checks) else "not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
