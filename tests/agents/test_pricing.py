"""What a model call costs: every token kind at the price in force, versioned by date."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.pricing import PRICE_TABLE, Price, UnpricedModel, Usage, cost, current_version, model_family, price_for

VERSION = "2026-09-01"
ONE_MILLION_EACH = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_write_tokens=1_000_000,
                         cache_read_tokens=1_000_000)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "input", "output", "write_5m", "write_1h", "read"),
    [
        ("claude-opus-5-5", "4", "20", "5", "8", "0.20"),
        ("claude-sonnet-5-5", "2", "10", "2.50", "4", "0.10"),
        ("claude-haiku-5-5", "0.10", "0.50", "0.125", "0.20", "0.01"),
    ],
)
def test_each_token_kind_costs_its_own_price_per_million(model, input, output, write_5m, write_1h, read):
    price = price_for(model, PRICE_TABLE, VERSION)

    def one(**tokens) -> Decimal:
        return cost(Usage(**tokens), price)

    assert one(input_tokens=1_000_000) == Decimal(input)
    assert one(output_tokens=1_000_000) == Decimal(output)
    assert one(cache_write_tokens=1_000_000) == Decimal(write_5m)
    assert cost(Usage(cache_write_tokens=1_000_000), price, cache_ttl="1h") == Decimal(write_1h)
    assert one(cache_read_tokens=1_000_000) == Decimal(read)
    assert cost(ONE_MILLION_EACH, price) == Decimal(input) + Decimal(output) + Decimal(write_5m) + Decimal(read)


def test_a_typical_turn_is_priced_to_the_millionth_of_a_dollar():
    usage = Usage(input_tokens=1_234, output_tokens=567, cache_write_tokens=8_901, cache_read_tokens=23_456)

    # 1234×2 + 567×10 + 8901×2.5 + 23456×0.1 = 2468 + 5670 + 22252.5 + 2345.6 = 32736.1 per million
    assert cost(usage, price_for("claude-sonnet-5-5", PRICE_TABLE, VERSION)) == Decimal("0.032736")


def test_no_tokens_cost_nothing():
    assert cost(Usage(), price_for("claude-opus-5-5", PRICE_TABLE, VERSION)) == Decimal(0)


def test_a_dated_model_id_is_priced_as_its_family():
    assert price_for("claude-sonnet-5-5-20261001", PRICE_TABLE, VERSION) == PRICE_TABLE[VERSION]["claude-sonnet-5-5"]
    assert price_for("claude-haiku-5-5-20261115", PRICE_TABLE, VERSION) == PRICE_TABLE[VERSION]["claude-haiku-5-5"]


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("anthropic.claude-sonnet-5-5-v1:0", "claude-sonnet-5-5"),  # Bedrock
        ("anthropic.claude-sonnet-5-5-20261001-v1:0", "claude-sonnet-5-5"),
        ("us.anthropic.claude-sonnet-5-5-20261001-v1:0", "claude-sonnet-5-5"),  # a cross-region profile
        ("global.anthropic.claude-opus-5-5-v1:0", "claude-opus-5-5"),
        ("apac.anthropic.claude-haiku-5-5-20261115-v1:0", "claude-haiku-5-5"),
        (
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-opus-5-5-v1:0",
            "claude-opus-5-5",
        ),
        ("claude-sonnet-5-5@20261001", "claude-sonnet-5-5"),  # Vertex
        ("claude-haiku-5-5@20261115", "claude-haiku-5-5"),
    ],
)
def test_bedrock_and_vertex_model_ids_are_priced_as_their_family(model, family):
    assert model_family(model) == family
    assert price_for(model, PRICE_TABLE, VERSION) == PRICE_TABLE[VERSION][family]


def test_an_id_the_table_names_exactly_is_priced_as_written():
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"  # says no model
    table = {VERSION: {**PRICE_TABLE[VERSION], profile: Price(*map(Decimal, "33333"))}}

    assert price_for(profile, table, VERSION) == Price(*map(Decimal, "33333"))
    with pytest.raises(UnpricedModel):
        price_for(profile, PRICE_TABLE, VERSION)


@pytest.mark.parametrize(
    "model", ["claude-unknown-1", "claude-opus-5-5-fast", "claude-sonnet-5", "anthropic.titan-v1:0"]
)
def test_an_unknown_model_has_no_price_not_even_one_whose_name_starts_like_a_known_one(model):
    with pytest.raises(UnpricedModel) as caught:
        price_for(model, PRICE_TABLE, VERSION)

    assert str(caught.value).startswith(f"no price for model {model!r}")
    assert "claude-haiku-5-5, claude-opus-5-5, claude-sonnet-5-5" in str(caught.value)


def test_the_newest_version_in_force_on_the_day_applies():
    old, new = Price(*map(Decimal, "11111")), Price(*map(Decimal, "22222"))
    table = {"2026-03-01": {"claude-sonnet-5-5": old}, "2026-09-01": {"claude-sonnet-5-5": new}}

    assert current_version(table, "2026-05-31") == "2026-03-01"
    assert current_version(table, "2026-09-01") == "2026-09-01"
    assert current_version(table, "2027-01-01") == "2026-09-01"
    assert price_for("claude-sonnet-5-5", table, current_version(table, "2026-08-31")) == old


def test_a_model_missing_from_the_version_in_force_has_no_price_even_if_an_older_one_had():
    table = {"2026-03-01": {"claude-opus-5-5": Price(*map(Decimal, "11111"))}, "2026-09-01": {}}

    with pytest.raises(KeyError):
        price_for("claude-opus-5-5", table, current_version(table, "2026-10-01"))
