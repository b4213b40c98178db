"""The numpy runtime (model/runtime.py) answers as the torch network (training/network.py) does.

On real data: small models trained here for a few epochs on the built-in set (with its entity
spans), banking77 and snips, each loaded from its saved artifact by the runtime and compared
with the torch network it was saved from, through the whole Predictor (calibration, out-of-scope
rules, the detector, the CRF). And on every shape a model can take (recurrent kind, pooling,
layers, one direction, pretrained vectors), with random weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model.artifact import WEIGHTS_FILE, save
from model.config import ModelConfig, TokenizerConfig
from model.predictor import Prediction, Predictor
from model.runtime import Runtime, Table, expected_shapes
from model.tokenizer import Flat, Tokenizer
from tests.conftest import ASSISTANT, shared_data, small_config
from training.network import IntentNet, TorchScorer
from training.readers import Example, read_file
from training.train import TrainResult, train

AGREE = 0.999  # share of texts whose top-1 and verdict (and entity spans) must be the same
PROB_GAP = 1e-3  # largest difference of any probability


def _verdict(p: Prediction) -> tuple[str | None, bool]:
    return p.intent if not p.out_of_scope else p.ranking[0].intent, p.out_of_scope


def _spans(p: Prediction) -> list[tuple[str, int, int, str]]:
    return [(e.entity, e.start, e.end, e.value) for e in p.entities]


def _compare(result: TrainResult, texts: list[str], tmp_path: Path) -> dict[str, float]:
    """The runtime, loaded from the saved artifact, beside the torch network it was saved from."""
    save(result.net, result.meta, tmp_path / "model")
    runtime = Predictor.load(tmp_path / "model")
    torch_path = Predictor(TorchScorer(result.net), result.meta, result.tokenizer)
    assert isinstance(runtime.scorer, Runtime)
    ours, theirs = runtime.predict_batch(texts), torch_path.predict_batch(texts)
    gap = float(np.abs(runtime.probabilities(texts) - torch_path.probabilities(texts)).max())
    n = len(texts)
    return {
        "verdicts": sum(_verdict(a) == _verdict(b) for a, b in zip(ours, theirs, strict=True)) / n,
        "spans": sum(_spans(a) == _spans(b) for a, b in zip(ours, theirs, strict=True)) / n,
        "gap": gap,
        "singles": sum(
            _verdict(runtime.predict(t)) == _verdict(b) for t, b in zip(texts[:50], theirs[:50], strict=True)
        )
        / min(n, 50),
    }


def _quick(rows: list[Example], **overrides: object) -> TrainResult:
    return train(rows, small_config(**{"epochs": 3, **overrides}))


def test_runtime_equals_torch_on_the_built_in_set_with_entities(tmp_path: Path) -> None:
    # The built-in rows with their entity spans: the tagger and the CRF decoder are compared too.
    result = _quick(read_file(ASSISTANT / "train.csv"))
    assert result.net.tagger is not None and result.net.detector is not None
    texts = [e.text for e in read_file(ASSISTANT / "test.csv")]
    found = _compare(result, texts, tmp_path)
    assert found["verdicts"] >= AGREE and found["spans"] >= AGREE and found["singles"] == 1.0, found
    assert found["gap"] < PROB_GAP, found


@pytest.mark.own_training  # a model of its own on each public set: 10,000 and 13,000 rows
@pytest.mark.parametrize("name", ["banking77", "snips"])
def test_runtime_equals_torch_on_public_data(name: str, tmp_path: Path) -> None:
    path = shared_data(name)
    result = _quick(read_file(path / "train.csv"), epochs=1)
    texts = [e.text for e in read_file(path / "test.csv")]
    found = _compare(result, texts, tmp_path)
    assert found["verdicts"] >= AGREE and found["singles"] == 1.0, found
    assert found["gap"] < PROB_GAP, found


SHAPES = [
    dict(arch="lstm", pooling="maxmean"),
    dict(arch="gru", pooling="max"),
    dict(arch="rnn", pooling="mean"),
    dict(arch="lstm", pooling="last"),
    dict(arch="gru", pooling="last", bidirectional=False),
    dict(arch="lstm", pooling="maxmean", num_layers=2, bag_char_ngrams=True),
    dict(arch="rnn", pooling="last", num_layers=2),
    dict(arch="lstm", pooling="max", vectors_dim=12, ngram_buckets=0),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_runtime_equals_torch_on_every_shape(shape: dict[str, object]) -> None:
    texts = [e.text for e in read_file(ASSISTANT / "test.csv")]
    tcfg = TokenizerConfig(ngram_buckets=int(shape.get("ngram_buckets", 997)))  # type: ignore[call-overload]
    tokenizer = Tokenizer.build(texts[::2], tcfg, bag_buckets=991)
    vocab = len(tokenizer)
    fields = dict(
        vocab_size=vocab,
        num_labels=7,
        embed_dim=24,
        hidden_dim=16,
        ngram_buckets=tcfg.ngram_buckets,
        bag_buckets=991,
        entity_tags=5,
        detector_rows=40,
        learned_vocab=vocab // 2 if shape.get("vectors_dim") else 0,
    )
    cfg = ModelConfig(**{**fields, **shape})  # type: ignore[arg-type]
    torch.manual_seed(0)
    net = IntentNet(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "bag" in name or name.startswith("tag_"):
                p.normal_(0, 0.5)  # zero-initialised: random here, or they would test nothing
        if net.embed.vectors is not None:
            net.embed.vectors.normal_(0, 1)
    net.attach_detector(torch.randn(40, net.encoder.out_dim), torch.randint(0, 7, (40,)))
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected_shapes(net.cfg)
    encoded = [tokenizer.encode(t) for t in texts] + [tokenizer.encode("")]
    in_scope = np.array([True] * 6 + [False])
    ours = Runtime(net.cfg, net.weights()).score(encoded, in_scope, batch_size=64, tags=True, features=True)
    theirs = TorchScorer(net).score(encoded, in_scope, batch_size=64, tags=True, features=True)
    np.testing.assert_allclose(ours.logits, theirs.logits, atol=1e-4, rtol=1e-4)
    assert ours.features is not None and theirs.features is not None
    np.testing.assert_allclose(ours.features, theirs.features, atol=1e-5)
    assert ours.near is not None and theirs.near is not None
    np.testing.assert_allclose(ours.near, theirs.near, atol=1e-5)
    for a, b in zip(ours.tags, theirs.tags, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # Without tags the top layer pools as it runs and keeps no states; one text a batch takes
    # the path for utterances of one length.
    runtime = Runtime(net.cfg, net.weights())
    for size, rows in ((64, len(encoded)), (1, 12)):
        lean = runtime.score(encoded[:rows], in_scope, batch_size=size, features=True)
        assert lean.features is not None and not lean.tags
        np.testing.assert_allclose(lean.features, theirs.features[:rows], atol=1e-5)
        np.testing.assert_allclose(lean.logits, theirs.logits[:rows], atol=1e-4, rtol=1e-4)


def test_a_batch_reads_each_distinct_word_once() -> None:
    """`Flat.of(distinct=True)`: every token maps to a row with its own word and n-grams."""
    texts = [*[e.text for e in read_file(ASSISTANT / "test.csv")][:40], "zzqx zzqx", "zzqxy"]
    tokenizer = Tokenizer.build(texts[::3], TokenizerConfig(ngram_buckets=997))
    encoded = [tokenizer.encode(t) for t in texts]
    plain, distinct = Flat.of(encoded), Flat.of(encoded, distinct=True)
    assert distinct.rows is not None and len(distinct.words) < len(plain.words)
    np.testing.assert_array_equal(distinct.words[distinct.rows], plain.words)
    grams = [g for e in encoded for g in e.ngrams]
    starts = np.cumsum(distinct.ngram_counts) - distinct.ngram_counts
    for token, row in enumerate(distinct.rows):
        run = distinct.ngrams[starts[row] : starts[row] + distinct.ngram_counts[row]]
        assert run.tolist() == grams[token]
    np.testing.assert_array_equal(distinct.bag, plain.bag)  # the sentence bag is per text, unchanged


def test_int8_tables_keep_each_parts_precision() -> None:
    """A scale for each row's part: a part 30x smaller than its neighbour keeps its own precision;
    the padding row reads as zeros; sums over runs are the sums of the rows."""
    rng = np.random.default_rng(0)
    big, small = rng.normal(0, 0.3, (50, 16)), rng.normal(0, 0.01, (50, 4))
    exact, table = Table.of([big, small]), Table.of([big, small], int8=True)
    assert table.values.dtype == np.int8 and table.values.nbytes < exact.values.nbytes / 3
    ids = np.arange(51)
    got, want = table.rows(ids), exact.rows(ids)
    assert not got[-1].any() and not want[-1].any()
    for lo, hi, part in ((0, 16, big), (16, 20, small)):
        step = np.abs(part).max(axis=1, keepdims=True) / 127
        assert (np.abs(got[:-1, lo:hi] - want[:-1, lo:hi]) <= step / 2 + 1e-7).all()
    runs, counts = rng.integers(0, 51, 30), np.array([0, 7, 1, 22])
    sums = table.run_sums(runs, counts)
    starts = np.cumsum(counts) - counts
    for k, (start, count) in enumerate(zip(starts, counts, strict=True)):
        np.testing.assert_allclose(sums[k], got[runs[start : start + count]].sum(axis=0), atol=1e-5)


def test_an_artifact_written_by_torch_loads_and_answers_the_same(
    small_result: TrainResult, tmp_path: Path
) -> None:
    """Artifacts saved before the runtime were written by safetensors' torch writer: they load as they are."""
    save(small_result.net, small_result.meta, tmp_path / "m")
    state = {k: v.detach().contiguous() for k, v in small_result.net.state_dict().items()}
    save_file(state, str(tmp_path / "m" / WEIGHTS_FILE), metadata={"format": "intently-model"})
    texts = [e.text for e in read_file(ASSISTANT / "test.csv")]
    loaded = Predictor.load(tmp_path / "m")
    live = Predictor(TorchScorer(small_result.net), small_result.meta, small_result.tokenizer)
    assert float(np.abs(loaded.probabilities(texts) - live.probabilities(texts)).max()) < PROB_GAP
    compact = Predictor.load(tmp_path / "m", quantize=True)
    same = sum(
        _verdict(a) == _verdict(b)
        for a, b in zip(compact.predict_batch(texts), live.predict_batch(texts), strict=True)
    )
    assert same >= 0.98 * len(texts)
