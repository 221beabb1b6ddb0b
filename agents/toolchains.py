"""The toolchains a recipe's `[toolchain]` names (node = "22", python = "3.12"), from the toolchain folder.

An admin fills the folder (TOOLCHAIN_ROOT, docs/deploy.md) with one folder per name and version:
`<root>/node/22`, `<root>/python/3.12`, each with a `bin` inside. The sandbox shows each one the recipe
asks for read-only at /opt/toolchains/<name>/<version> and puts its `bin` first on PATH, in the recipe's
order. Links inside a toolchain are followed in the sandbox's own view, where only /usr, the workspace
and such binds exist: `python/3.11/bin/python3 -> /usr/bin/python3.11` works, and a link to /etc/shadow
finds nothing. The one path the host resolves is the version folder itself (bwrap binds what it points
to), so that folder must stay inside the toolchain folder: a `node/22 -> node/22.11.0` link is fine, a
`node/22 -> /` would show the sandbox the host's whole disk and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agents.errors import ServiceError

INSIDE_ROOT = "/opt/toolchains"


@dataclass(frozen=True)
class Toolchain:
    name: str  # node
    version: str  # 22
    host: Path  # the folder on this machine, <root>/node/22 resolved

    @property
    def inside(self) -> str:
        """Where commands see it."""
        return f"{INSIDE_ROOT}/{self.name}/{self.version}"

    @property
    def bin(self) -> str:
        return f"{self.inside}/bin"

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.inside})"


def installed(root: Path | None) -> dict[str, list[str]]:
    """Name -> versions (in version order) present under `root`."""
    found: dict[str, list[str]] = {}
    if root is None or not root.is_dir():
        return found
    for name_dir in sorted(root.iterdir()):
        if name_dir.is_dir():
            versions = sorted((v.name for v in name_dir.iterdir() if v.is_dir()), key=_version_key)
            if versions:
                found[name_dir.name] = versions
    return found


def find_toolchains(root: Path | None, wanted: Iterable[tuple[str, str]]) -> tuple[Toolchain, ...]:
    """The toolchains of `wanted` ((name, version) pairs, the recipe's order) under `root`.

    Raises ServiceError("toolchain_missing") naming every one this machine lacks, what it has instead
    and where an admin adds it; the build stops before any command runs."""
    wanted = tuple(wanted)
    if not wanted:
        return ()
    found, missing = [], []
    base = root.resolve() if root is not None and root.is_dir() else None
    for name, version in wanted:
        folder = base / name / version if base else None
        host = folder.resolve() if folder is not None and folder.is_dir() else None
        if host is not None and base in host.parents:
            found.append(Toolchain(name, version, host))
        elif host is not None:
            missing.append(
                f"{name} {version} is not usable: {folder} leads outside the toolchain folder (to {host}), "
                "which the sandbox must not be shown. An admin replaces it with a real folder: see docs/deploy.md"
            )
        else:
            missing.append(_missing(root, name, version))
    if missing:
        raise ServiceError("toolchain_missing", "; ".join(missing))
    return tuple(found)


def describe(toolchains: Iterable[Toolchain]) -> str:
    """For the build log: 'node 22 (/opt/toolchains/node/22), python 3.12 (/opt/toolchains/python/3.12)'."""
    return ", ".join(str(t) for t in toolchains)


def _missing(root: Path | None, name: str, version: str) -> str:
    if root is None or not root.is_dir():
        return (
            f"{name} {version} is not installed on the workers (they have no toolchain folder"
            f"{f' at {root}' if root else ''}). An admin adds it under "
            f"{root or 'TOOLCHAIN_ROOT'}/{name}/{version}: see docs/deploy.md"
        )
    have = installed(root)
    others = ", ".join(f"{n} {v}" for n in sorted(have) for v in have[n] if n == name) or f"no {name}"
    return (
        f"{name} {version} is not installed on the workers (they have: {others}). "
        f"An admin adds it under {root}/{name}/{version}: see docs/deploy.md"
    )


def _version_key(version: str) -> list:
    """'3.9' before '3.12': numbers compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[._-]", version)]
