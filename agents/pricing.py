"""Model prices in USD per million tokens, versioned by the date they took effect.

A ModelCall stores the version it was priced with, so old costs stay explainable after a change.
Callers may pass their own table (the Django settings do) with the same shape.
"""

from __future__ import annotations

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


def price_for(model: str, table: dict[str, dict[str, Price]], version: str) -> Price:
    prices = table[version]
    if model in prices:
        return prices[model]
    # Dated model ids ("claude-sonnet-5-5-20261001") are priced as their family.
    for name in sorted(prices, key=len, reverse=True):
        if model.startswith(name):
            return prices[name]
    raise KeyError(f"no price for model {model!r} in price table {version}")


def cost(usage: Usage, price: Price, *, cache_ttl: str = "5m") -> Decimal:
    write = price.cache_write_1h if cache_ttl == "1h" else price.cache_write_5m
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_write_tokens * write
        + usage.cache_read_tokens * price.cache_read
    ) / MILLION
    return total.quantize(Decimal("0.000001"))
