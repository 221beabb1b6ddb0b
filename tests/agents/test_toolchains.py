"""A recipe's [toolchain]: versions an admin put in the toolchain folder, shown read-only in the sandbox at
/opt/toolchains/<name>/<version> with their bin first on PATH (agents/toolchains.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agents import BuildSpec, build
from agents.errors import ServiceError
from agents.providers import ProviderConfig
from agents.sandbox.bwrap import BwrapSandbox
from agents.sandbox.none import NoneSandbox
from agents.toolchains import Toolchain, describe, find_toolchains, installed
from tests.agents.sinks import Sink

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def add_toolchain(root: Path, name: str, version: str, programs: dict[str, str]) -> Path:
    """A toolchain as an admin unpacks one: <root>/<name>/<version>/bin/<program> scripts."""
    folder = root / name / version
    (folder / "bin").mkdir(parents=True)
    for program, script in programs.items():
        path = folder / "bin" / program
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
    return folder


@pytest.fixture
def root(scratch_dir):
    return scratch_dir("toolchains-")


def run(tree: Path, toolchains, script: str):
    return BwrapSandbox(tree, toolchains=toolchains).run(["bash", "-c", script], timeout=60)


def test_a_command_finds_the_toolchain_first_on_path(tree, root):
    add_toolchain(root, "node", "22", {"node": "echo fake node 22", "python3": "echo not this one"})
    add_toolchain(root, "python", "3.12", {"python3": "echo fake python 3.12"})
    found = find_toolchains(root, [("python", "3.12"), ("node", "22")])

    result = run(tree, found, 'node; python3; command -v python3; echo "$PATH"')

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "fake node 22",
        "fake python 3.12",  # the recipe named python first: its python3 wins over node's and /usr/bin's
        "/opt/toolchains/python/3.12/bin/python3",
        "/opt/toolchains/python/3.12/bin:/opt/toolchains/node/22/bin:/usr/local/bin:/usr/bin:/bin",
    ]
    assert describe(found) == "python 3.12 (/opt/toolchains/python/3.12), node 22 (/opt/toolchains/node/22)"


def test_without_a_sandbox_the_toolchain_is_first_on_path_where_it_is(tree, root):
    folder = add_toolchain(root, "node", "22", {"node": "echo fake node 22"})
    sandbox = NoneSandbox(tree, debug=True, toolchains=find_toolchains(root, [("node", "22")]))

    result = sandbox.run(["bash", "-c", "node; command -v node"], timeout=60)

    assert result.output.splitlines() == ["fake node 22", str((folder / "bin" / "node").resolve())]


def test_the_toolchain_is_read_only_inside(tree, root):
    folder = add_toolchain(root, "node", "22", {"node": "echo fake node"})

    result = run(tree, find_toolchains(root, [("node", "22")]),
                 "echo 'echo hijacked' > /opt/toolchains/node/22/bin/node; touch /opt/toolchains/node/22/new; node")  # fmt: skip

    assert "Read-only file system" in result.output
    assert result.output.splitlines()[-1] == "fake node"
    assert (folder / "bin" / "node").read_text() == "#!/bin/sh\necho fake node\n"
    assert not (folder / "new").exists()


def test_links_into_usr_work_inside(tree, root):
    # A toolchain made from Debian's packages (docs/deploy.md): links to the programs under /usr.
    folder = root / "python" / "3.11"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "python3").symlink_to(os.path.realpath("/usr/bin/python3"))

    result = run(tree, find_toolchains(root, [("python", "3.11")]), "python3 -c 'print(6 * 7)'")

    assert (result.exit_code, result.output) == (0, "42\n")


def test_a_missing_toolchain_is_named_with_what_the_workers_have(root):
    add_toolchain(root, "node", "20", {})
    add_toolchain(root, "node", "18", {})
    add_toolchain(root, "python", "3.12", {})

    with pytest.raises(ServiceError) as caught:
        find_toolchains(root, [("python", "3.12"), ("node", "22"), ("java", "21")])

    assert caught.value.code == "toolchain_missing"
    assert caught.value.family == "ours"
    assert caught.value.detail == (
        f"node 22 is not installed on the workers (they have: node 18, node 20). An admin adds it under "
        f"{root}/node/22: see docs/deploy.md; java 21 is not installed on the workers (they have: no java). "
        f"An admin adds it under {root}/java/21: see docs/deploy.md"
    )


def test_a_version_folder_that_leads_outside_the_toolchain_folder_is_refused(root):
    (root / "node").mkdir()
    (root / "node" / "22").symlink_to("/etc")
    (root / "node" / "20.11.1").mkdir()
    (root / "node" / "20").symlink_to("20.11.1")  # a link inside the folder is fine

    assert find_toolchains(root, [("node", "20")]) == (Toolchain("node", "20", (root / "node" / "20.11.1").resolve()),)
    with pytest.raises(ServiceError, match=r"node 22 is not usable: .*/node/22 leads outside the toolchain folder"):
        find_toolchains(root, [("node", "22")])


def test_versions_are_listed_in_version_order(root):
    for version in ("3.9", "3.12", "3.11"):
        add_toolchain(root, "python", version, {})

    assert installed(root) == {"python": ["3.9", "3.11", "3.12"]}
    assert installed(root / "nothing-here") == {}


# --- the engine -------------------------------------------------------------------------------------
def podcast_build(make_repo, scratch_dir, toolchain_root: Path, extra: str) -> BuildSpec:
    recipe = (EXAMPLES / "targets" / "podcast-api" / "prototype.toml").read_text()
    recipe = recipe.replace("[build]", f"{extra}\n\n[build]", 1)
    repo = make_repo(source=EXAMPLES / "targets" / "podcast-api", files={"prototype.toml": recipe})
    work = scratch_dir("build-")
    return BuildSpec(
        target="podcast-api", repo_url=str(repo), base_ref="main", idea="Show the episode count per show", browser_check=False,
        mirror=work / "mirror.git", work_dir=work / "work", output_dir=work / "out",
        result_ref="refs/prototypes/test/1", provider=ProviderConfig(name="replay", recordings=EXAMPLES / "recordings"),
        toolchain_root=toolchain_root,
    )  # fmt: skip


def test_the_build_log_names_the_toolchains_and_setup_uses_them(make_repo, scratch_dir, root):
    add_toolchain(root, "node", "22", {"node": "echo fake node 22"})
    spec = podcast_build(
        make_repo, scratch_dir, root, '[toolchain]\nnode = "22"\n\n[setup]\ncommands = ["node; exit 3"]'
    )

    sink = Sink()
    result = build(spec, sink)

    assert result.error is not None and result.error.code == "setup_failed", result.error
    assert "exited with 3: fake node 22\n" in result.error.detail
    assert ("log", {"text": "Toolchains: node 22 (/opt/toolchains/node/22)."}) in sink.events


def test_a_build_asking_for_a_missing_toolchain_stops_before_setup_and_the_agent(make_repo, scratch_dir, root):
    add_toolchain(root, "node", "20", {"node": "echo fake node 20"})
    spec = podcast_build(make_repo, scratch_dir, root, '[toolchain]\nnode = "22"\n\n[setup]\ncommands = ["true"]')

    sink = Sink()
    result = build(spec, sink)

    assert result.error is not None and result.error.code == "toolchain_missing", result.error
    assert result.error.detail.startswith("node 22 is not installed on the workers (they have: node 20).")
    steps = [data.get("step") for kind, data in sink.events if kind == "step"]
    assert "setup" not in steps and "agent" not in steps
    assert not any(kind == "command" for kind, _ in sink.events)
