"""PriceTable: cost arithmetic, unknown models, merging user JSON/YAML price files."""

import json

import pytest

from gcache.api.pricing import DEFAULT_PRICES, ModelPrice, PriceTable


def test_cost_of_known_models():
    table = PriceTable()
    # USD per 1M tokens, from the documented defaults: flash 0.05/0.40, plus 0.40/1.20, turbo 0.05/0.20
    assert table.cost("qwen-plus", 1234, 567) == pytest.approx(1234 * 0.40e-6 + 567 * 1.20e-6)
    assert table.cost("qwen-flash", 1_000_000, 1_000_000) == pytest.approx(0.45)
    assert table.cost("qwen-turbo", 0, 2_000_000) == pytest.approx(0.40)
    assert table.cost("qwen-plus", 0, 0) == 0.0


def test_unknown_model_has_no_cost_but_snapshots_do():
    table = PriceTable()
    assert table.cost("my-local-llama", 10, 10) is None
    assert table.cost("qwen-plus-2025-07-28", 1_000_000, 0) == pytest.approx(0.40)


def test_negative_tokens_and_prices_are_rejected():
    with pytest.raises(ValueError, match="token counts"):
        PriceTable().cost("qwen-plus", -1, 0)
    with pytest.raises(ValueError, match="prices must be >= 0"):
        ModelPrice(-0.1, 1.0)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_load_merges_over_defaults(tmp_path, suffix):
    data = {"qwen-plus": {"input": 1.0, "output": 2.0}, "local": {"input": 0, "output": 0}}
    path = tmp_path / f"prices{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text("qwen-plus: {input: 1.0, output: 2.0}\nlocal:\n  input: 0\n  output: 0\n")
    table = PriceTable.load(path)
    assert table.cost("qwen-plus", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.cost("local", 5, 5) == 0.0
    assert table.get("qwen-flash") == DEFAULT_PRICES["qwen-flash"]  # untouched entries stay
    assert PriceTable().cost("qwen-plus", 1_000_000, 0) == pytest.approx(0.40)  # defaults unchanged


def test_load_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("qwen-plus: {input: 1.0}\n")
    with pytest.raises(ValueError, match="'input' and 'output'"):
        PriceTable.load(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(ValueError, match="mapping"):
        PriceTable.load(bad)


def test_table_is_immutable_and_copies_its_input():
    source = {"m": ModelPrice(1.0, 1.0)}
    table = PriceTable(source)
    source["m"] = ModelPrice(9.0, 9.0)
    assert table.cost("m", 1_000_000, 0) == pytest.approx(1.0)
    with pytest.raises(TypeError):
        table.prices["m"] = ModelPrice(2.0, 2.0)  # type: ignore[index]
