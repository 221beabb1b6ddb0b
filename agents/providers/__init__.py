"""Model providers: each gives the loop an `anthropic` SDK client and a model name.

Siblings look alike: a provider module defines a class with `__init__(config: ProviderConfig, spec)`,
`client()` and `judge_client()` (the client the judge's calls go to, or None when this provider cannot
judge: a replayed sample without a review part); they are registered here by dotted path and imported on
first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

PROVIDERS = {
    "anthropic": "agents.providers.anthropic_api.AnthropicProvider",
    "bedrock": "agents.providers.anthropic_api.BedrockProvider",
    "vertex": "agents.providers.anthropic_api.VertexProvider",
    "replay": "agents.providers.replay.ReplayProvider",
}


@dataclass(frozen=True)
class ProviderConfig:
    name: str = "replay"
    model: str = "claude-sonnet-5-5"
    api_key: str = field(default="", repr=False)
    base_url: str = ""
    region: str = ""
    project: str = ""
    recordings: Path | None = None  # replay: the folder of sample conversations (written by hand)
    cassette: Path | None = None  # replay: one sample conversation, whatever the idea
    pace: float = 0.0  # replay: seconds to wait before each response, so a demo build can be watched
    # replay: refuse a sample on code it was not written for (replay.fit_problem). Turned off only by tests
    # that must reproduce the broken build such a replay made (a sample applied twice).
    check_fit: bool = True
    max_retries: int = 0  # the loop retries itself, within the build's remaining time


def load_provider(name: str):
    dotted = PROVIDERS.get(name, name)
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"unknown model provider {name!r}; expected one of {', '.join(PROVIDERS)}") from exc
