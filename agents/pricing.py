"""Model prices in USD per million tokens, versioned by the date they took effect.

A ModelCall stores the version it was priced with, so old costs stay explainable after a change.
Callers may pass their own table (the Django settings do) with the same shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Price:
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


def _p(*values: str) -> Price:
    return Price(*(Decimal(v) for v in values))


# version -> model -> price. The newest version whose date is not after "today" applies.
PRICE_TABLE: dict[str, dict[str, Price]] = {
    "2026-09-01": {
        "claude-opus-5-5": _p("4", "20", "5", "8", "0.20"),
        "claude-sonnet-5-5": _p("2", "10", "2.50", "4", "0.10"),
        "claude-haiku-5-5": _p("0.10", "0.50", "0.125", "0.20", "0.01"),
    },
}
MILLION = Decimal(1_000_000)
# A replayed sample conversation calls no model: its calls are priced at nothing under this version, so its
# made-up token counts can never become dollars anywhere (budgets, the cost page, the build page).
SAMPLE_VERSION = "sample"
FREE = Price(Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(0))


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cache_read_tokens += other.cache_read_tokens

    @property
    def total_input(self) -> int:
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    @property
    def total(self) -> int:
        return self.total_input + self.output_tokens

    @property
    def cache_share(self) -> float:
        """The share of input tokens read from the prompt cache."""
        return self.cache_read_tokens / self.total_input if self.total_input else 0.0


def current_version(table: dict[str, dict[str, Price]], today: str) -> str:
    versions = sorted(v for v in table if v <= today) or sorted(table)
    return versions[-1]


# The same model is named differently by each service that serves it:
#   Anthropic   claude-sonnet-5-5, claude-sonnet-5-5-20261001 (a dated snapshot)
#   Bedrock     anthropic.claude-sonnet-5-5-20261001-v1:0, us.anthropic.claude-sonnet-5-5-v1:0 (a cross-region
#               inference profile), or an ARN ending in one of those
#   Vertex      claude-sonnet-5-5@20261001
_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[^/]*/")
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z]{2,6}\.)?anthropic\.")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::[0-9a-z]+)*$")
_SNAPSHOT = re.compile(r"-\d{8}$")


class UnpricedModel(KeyError):
    """The price table has no price for a model: a build on it must not start, or its cost would be unknown."""

    def __str__(self) -> str:  # KeyError's own str() quotes the message
        return str(self.args[0]) if self.args else ""


def model_family(model: str) -> str:
    """The name the price table uses for a model id of any service: "us.anthropic.claude-sonnet-5-5-20261001-v1:0",
    "claude-sonnet-5-5@20261001" and "claude-sonnet-5-5-20261001" are all "claude-sonnet-5-5"."""
    name = _ARN.sub("", model.strip())
    name = name.partition("@")[0]
    name = _BEDROCK_PREFIX.sub("", name)
    name = _BEDROCK_VERSION.sub("", name)
    return _SNAPSHOT.sub("", name)


def price_for(model: str, table: dict[str, dict[str, Price]], version: str) -> Price:
    """The price of a model in one version of the table: by its exact id (an admin may price any id, such as an
    opaque Bedrock application inference profile), else by its family. Never by a mere prefix: a new model
    whose name starts like a known one ("claude-opus-5-5-fast") must not silently get that one's price.
    Raises UnpricedModel when there is none."""
    prices = table.get(version, {})
    for name in (model, model_family(model)):
        if name in prices:
            return prices[name]
    raise UnpricedModel(
        f"no price for model {model!r} (read as {model_family(model)!r}) in price table {version}; "
        f"priced: {', '.join(sorted(prices)) or 'none'}"
    )


def cost(usage: Usage, price: Price, *, cache_ttl: str = "5m") -> Decimal:
    write = price.cache_write_1h if cache_ttl == "1h" else price.cache_write_5m
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * write
        + usage.cache_read_tokens * price.cache_read
    ) / MILLION
    return total.quantize(Decimal("0.000001"))
