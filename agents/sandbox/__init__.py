"""Sandboxes for untrusted commands: `load_backend("bwrap")(workspace).run(["bash", "-c", "npm test"])`.

Backends are registered by dotted path and imported on first use; a setting may also name any other
`Sandbox` subclass by its dotted path.
"""

from __future__ import annotations

from importlib import import_module

from agents.sandbox.base import CommandResult, Sandbox, SandboxError, SandboxLimits

BACKENDS = {
    "bwrap": "agents.sandbox.bwrap.BwrapSandbox",
    "docker": "agents.sandbox.docker.DockerSandbox",
    "none": "agents.sandbox.none.NoneSandbox",
}

__all__ = ["BACKENDS", "CommandResult", "Sandbox", "SandboxError", "SandboxLimits", "load_backend"]


def load_backend(name_or_dotted_path: str) -> type[Sandbox]:
    """The backend class for "bwrap", "docker", "none" or "package.module.Class", imported on first use."""
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
