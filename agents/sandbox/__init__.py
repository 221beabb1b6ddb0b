"""Sandboxes for untrusted commands: `load_backend("bwrap")(workspace).run(["bash", "-c", "npm test"])`.

Backends are registered by dotted path and imported on first use; a setting may also name any other
`Sandbox` subclass by its dotted path.
"""

from __future__ import annotations

from importlib import import_module

from agents.sandbox.base import CommandResult, Sandbox, SandboxError, SandboxLimits

BACKENDS = {
    "bwrap": "agents.sandbox.bwrap.BwrapSandbox",
    "none": "agents.sandbox.none.NoneSandbox",
}
# Backends that existed once. Naming one is an error that says why, never a quiet fallback to another.
REMOVED_BACKENDS = {
    "docker": (
        "The docker sandbox backend was removed: it was never proven to work (its image had no python3, "
        "node or ripgrep, its user could not write the workspace, and no test ever ran it against a real "
        "Docker engine). Use the bwrap sandbox; see docs/deploy.md."
    ),
}

__all__ = ["BACKENDS", "REMOVED_BACKENDS", "CommandResult", "Sandbox", "SandboxError", "SandboxLimits", "load_backend"]


def load_backend(name_or_dotted_path: str) -> type[Sandbox]:
    """The backend class for "bwrap", "none" or "package.module.Class", imported on first use."""
    if name_or_dotted_path in REMOVED_BACKENDS:
        raise SandboxError(REMOVED_BACKENDS[name_or_dotted_path])
    path = BACKENDS.get(name_or_dotted_path, name_or_dotted_path)
    module_name, _, class_name = path.rpartition(".")
    try:
        backend = getattr(import_module(module_name), class_name) if module_name else None
    except (ImportError, AttributeError):
        backend = None
    if not (isinstance(backend, type) and issubclass(backend, Sandbox)):
        raise SandboxError(
            f"Unknown sandbox backend {name_or_dotted_path!r}: use one of {', '.join(BACKENDS)} "
            "or the dotted path of a Sandbox class."
        )
    return backend
