"""What the engine's command-line subcommands share (`python -m agents build`, `python -m agents eval`):
where a repository's mirror is kept on this machine, which model provider runs by default, and how a
repository is named on the command line."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from agents.providers import ProviderConfig

# The hand-written sample conversations the replay provider picks from by target and idea.
RECORDINGS = Path(__file__).resolve().parent.parent / "examples" / "recordings"


def default_cache() -> Path:
    """Where mirrors and dependency layers are kept between runs: $XDG_CACHE_HOME/prototype-store, else
    ~/.cache/prototype-store."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prototype-store"


def default_provider() -> str:
    """anthropic when ANTHROPIC_API_KEY is set, else replay (the sample conversations)."""
    return "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "replay"


def default_model() -> str:
    return os.environ.get("AGENT_MODEL", "claude-sonnet-5-5")


def default_judge() -> bool:
    """The judge (agents/judge.py) is on unless AGENT_JUDGE says off, as in the store's settings. With the
    replay provider it runs only for samples that carry their own sample review."""
    return os.environ.get("AGENT_JUDGE", "on").strip().lower() not in {"off", "0", "false", "no"}


def provider_config(name: str, model: str, recordings: Path | None, cassette: Path | None = None) -> ProviderConfig:
    """The provider as the environment configures it. The key stays in this process: it is passed to the
    SDK and to the engine's scrubber, never to a sandbox."""
    return ProviderConfig(
        name=name, model=model, api_key=os.environ.get("ANTHROPIC_API_KEY", ""),
        base_url=os.environ.get("ANTHROPIC_BASE_URL", ""), recordings=recordings, cassette=cassette,
    )  # fmt: skip


def safe_name(target: str) -> str:
    """`target` as one path or ref component: letters, digits, - and _."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", target).strip("-") or "repo"


def looks_like_git_url(text: str) -> bool:
    """https://…, ssh://…, file://…, git@host:org/repo, host:org/repo."""
    return "://" in text or bool(re.match(r"^([\w.+-]+@)?[\w.-]+:", text))


def repo_source(text: str) -> str:
    """A git URL as given; a local path made absolute against the caller's folder, since git runs with
    other working folders. Raises ValueError when a path names no folder."""
    path = Path(text).expanduser()
    if not path.exists() and looks_like_git_url(text):
        return text
    if not path.is_dir():
        raise ValueError(f"--repo: there is no folder {path.resolve()}")
    return str(path.resolve())


def mirror_for(cache: Path, repo: str, target: str) -> Path:
    """The bare mirror of `repo` in the cache folder: one per repository, kept between runs, so a second
    build of the same repository needs no setup and no network, as in the store."""
    return cache / f"{hashlib.sha256(repo.encode()).hexdigest()[:16]}-{safe_name(target)}.git"
