"""One definition of the training options reaches the command line, the job API, its schema and the docs."""

from __future__ import annotations

import argparse
import re

import pytest

from app.main import create_app
from model.config import ModelConfig
from tests.conftest import ROOT
from training.cli import add_training_flags, parse_options
from training.config import NETWORK_FIELDS, TrainConfig


def _flags(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    args = parser.parse_args(list(argv))
    given = {name: getattr(args, name) for name in TrainConfig.model_fields}
    return parse_options(args.set, {k: v for k, v in given.items() if v is not None})


def test_every_option_has_a_flag_read_as_its_type() -> None:
    config = _flags(
        "--hidden-dim", "32", "--no-bidirectional", "--lr", "0.01", "--arch", "gru", "--no-vectors"
    )
    assert (config.hidden_dim, config.bidirectional, config.lr, config.arch) == (32, False, 0.01, "gru")
    assert config.vectors == "" and config.given() == {
        "hidden_dim": 32,
        "bidirectional": False,
        "lr": 0.01,
        "arch": "gru",
        "vectors": "",
    }
    assert _flags("--set", "word_coverage=no", "--set", "epochs=3").model_dump(
        include={"word_coverage", "epochs"}
    ) == {
        "word_coverage": False,
        "epochs": 3,
    }
    with pytest.raises(SystemExit):
        _flags("--arch", "transformer")


def test_json_options_keep_their_types_and_bounds() -> None:
    with pytest.raises(ValueError, match="option epochs must be of type int, not '12'"):
        TrainConfig.from_options({"epochs": "12"})
    assert TrainConfig.from_options({"epochs": "12"}, strict=False).epochs == 12
    with pytest.raises(ValueError, match=r"option embed_dim=4096 is outside 1\.\.2048"):
        TrainConfig.from_options({"embed_dim": 4096})
    with pytest.raises(ValueError, match=r"unknown training options: \['hiden_dim'\]"):
        TrainConfig.from_options({"hiden_dim": 3})
    with pytest.raises(ValueError, match="option bidirectional must be of type bool"):
        TrainConfig.from_options({"bidirectional": 1})


def test_the_network_takes_its_shape_from_the_options() -> None:
    # A field renamed on either side would silently fall back to ModelConfig's default.
    assert {
        "arch",
        "embed_dim",
        "hidden_dim",
        "num_layers",
        "bidirectional",
        "pooling",
        "dropout",
        "ngram_buckets",
        "bag_buckets",
        "bag_char_ngrams",
    } == NETWORK_FIELDS
    options = TrainConfig(
        arch="gru",
        embed_dim=48,
        hidden_dim=40,
        num_layers=2,
        bidirectional=False,
        pooling="last",
        dropout=0.2,
        ngram_buckets=900,
        bag_buckets=700,
        bag_char_ngrams=False,
    )
    network = options.network_config(vocab_size=10, num_labels=3, entity_types=2)
    assert isinstance(network, ModelConfig) and network.entity_tags == 5
    assert {name: getattr(network, name) for name in NETWORK_FIELDS} == options.model_dump(
        include=NETWORK_FIELDS
    )


def test_the_job_api_schema_lists_every_option_with_its_bounds() -> None:
    schema = create_app().openapi()["components"]["schemas"]
    options = schema["TrainingJobCreate"]["properties"]["options"]
    assert options["$ref"].endswith("/TrainConfig") or any(
        ref.get("$ref", "").endswith("/TrainConfig") for ref in options.get("allOf", [])
    )
    properties = schema["TrainConfig"]["properties"]
    assert set(properties) == set(TrainConfig.model_fields)
    assert properties["embed_dim"]["maximum"] == 2048 and properties["arch"]["enum"] == ["lstm", "gru", "rnn"]
    assert all(p.get("description") for p in properties.values())


def test_the_docs_table_names_every_option_with_its_default() -> None:
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]*) \|", text, flags=re.MULTILINE))
    assert set(rows) == set(TrainConfig.model_fields)
    for name, info in TrainConfig.model_fields.items():
        shown = rows[name].strip().strip("`")
        default = info.default
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        assert shown in {expected, f"{default:g}" if isinstance(default, float) else expected}, name
