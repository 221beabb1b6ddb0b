"""The real model services through the SDK's own clients: Anthropic's API, Amazon Bedrock, Google Vertex."""

from __future__ import annotations

import anthropic

from agents.errors import ServiceError
from agents.providers import ProviderConfig


class AnthropicProvider:
    live = True

    def __init__(self, config: ProviderConfig, *, target: str = "", idea: str = ""):
        if not config.api_key:
            raise ServiceError("model_unavailable", "ANTHROPIC_API_KEY is not set")
        self.config = config
        self.model = config.model

    def client(self) -> anthropic.Anthropic:
        # Few SDK retries: the loop does its own bounded backoff within the build's remaining time.
        return anthropic.Anthropic(
            api_key=self.config.api_key,
            base_url=self.config.base_url or None,
            max_retries=self.config.max_retries,
        )


class BedrockProvider(AnthropicProvider):
    def __init__(self, config: ProviderConfig, *, target: str = "", idea: str = ""):
        self.config = config
        self.model = config.model

    def client(self):
        return anthropic.AnthropicBedrock(aws_region=self.config.region or None, max_retries=self.config.max_retries)


class VertexProvider(AnthropicProvider):
    def __init__(self, config: ProviderConfig, *, target: str = "", idea: str = ""):
        self.config = config
        self.model = config.model

    def client(self):
        return anthropic.AnthropicVertex(
            region=self.config.region or None,
            project_id=self.config.project or None,
            max_retries=self.config.max_retries,
        )
