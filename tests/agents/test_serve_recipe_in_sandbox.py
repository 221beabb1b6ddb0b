"""The examples' [serve] sections work where previews will run them: in the bwrap sandbox (no network but
its own, Debian's python3), built by the recipe's own build command, with only the artifact and its data
folder to work in. The preview runtime (agents/serve.py) is tested in test_serve.py; this checks the
examples keep the promise their recipes make, in the plainest sandbox run."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from agents.recipe import parse_recipe
from agents.sandbox import load_backend

TARGETS = Path(__file__).resolve().parents[2] / "examples" / "targets"
SERVED = sorted(p.name for p in TARGETS.iterdir() if parse_recipe((p / "prototype.toml").read_text()).serve)

# Waits for the health path over the sandbox's own loopback and prints what it answered.
PROBE = """\
import sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for _ in range(100):
    try:
        print(opener.open(sys.argv[1], timeout=1).read().decode())
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("no answer from " + sys.argv[1])
"""


# Served on their own; web-player serves beside podcast-api (its backend), which tests/test_pairing.py and
# the e2e suite run through the real runtime.
STANDALONE = [n for n in SERVED if not parse_recipe((TARGETS / n / "prototype.toml").read_text()).serve.backends]


def test_the_served_examples_are_the_ones_meant_to_be():
    assert SERVED == ["notes-app", "podcast-api", "web-player"]
    assert STANDALONE == ["notes-app", "podcast-api"]


@pytest.mark.parametrize("name", STANDALONE)
def test_a_served_example_starts_and_answers_its_health_check_inside_the_sandbox(name, scratch_dir):
    recipe = parse_recipe((TARGETS / name / "prototype.toml").read_text())
    serve = recipe.serve
    work = scratch_dir("serve-")
    tree = work / "tree"
    shutil.copytree(TARGETS / name, tree, ignore=shutil.ignore_patterns("__pycache__", "build", "dist", "data"))
    built = load_backend("bwrap")(tree).run(["bash", "-c", recipe.build.command], timeout=120)
    assert built.exit_code == 0, built.output
    instance = work / "instance"  # the unpacked artifact: for a .pyz, that one file under its own name
    instance.mkdir()
    shutil.copy(tree / recipe.artifact.path, instance)

    # Seed, start the command in the background, probe the health path, stop the app: one sandboxed
    # shell, since the sandbox runs a command to its end.
    url = f"http://127.0.0.1:{serve.port}{serve.health}"
    seed = f"{serve.seed} && " if serve.seed else ""
    script = f"{seed}{{ {serve.command} & }} && python3 -c {shlex.quote(PROBE)} {url}; status=$?; kill %1; exit $status"
    result = load_backend("bwrap")(instance).run(["bash", "-c", script], timeout=60)

    assert result.exit_code == 0, result.output
    assert '"status": "ok"' in result.output
    assert f"serving on http://0.0.0.0:{serve.port}/" in result.output  # on every address of its own network
    written = {p.relative_to(instance).parts[0] for p in instance.rglob("*") if p.is_file()}
    assert written <= {Path(recipe.artifact.path).name, serve.data}, "the app wrote outside its data folder"
    if serve.seed:
        assert any((instance / serve.data).iterdir()), "the seed left nothing in the data folder"
