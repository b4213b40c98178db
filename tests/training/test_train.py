from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import save
from model.predictor import Predictor, verdicts
from tests.conftest import small_config
from training.evaluate import evaluate
from training.network import Batch, load_net
from training.readers import Example
from training.train import TrainConfig, TrainResult, stratified_split, train

TINY = dict(embed_dim=32, hidden_dim=32, ngram_buckets=2000, epochs=3)


def _subset(examples: list[Example], per_intent: int) -> list[Example]:
    seen: dict[str, int] = {}
    out = []
    for e in examples:
        if seen.get(e.intent, 0) < per_intent:
            seen[e.intent] = seen.get(e.intent, 0) + 1
            out.append(e)
    return out


def test_training_really_learns(small_predictor: Predictor, assistant_test: list[Example]) -> None:
    report = evaluate(small_predictor, assistant_test)
    assert report["metrics"]["in_scope_accuracy"] > 0.75  # 30 intents: chance is 0.03
    assert report["metrics"]["oos_recall"] > 0.6


def test_same_seed_same_predictions(assistant_train: list[Example]) -> None:
    data = _subset(assistant_train, 12)
    a = train(data, small_config(**TINY, seed=3))
    b = train(data, small_config(**TINY, seed=3))
    probes = ["What time is it?", "play music", "unknown wrds"]
    la = Predictor(a.net, a.meta, a.tokenizer).logits(probes)
    lb = Predictor(b.net, b.meta, b.tokenizer).logits(probes)
    assert np.array_equal(la, lb)
    assert a.meta.threshold == b.meta.threshold and a.meta.temperature == b.meta.temperature


# Four intents, the deep path alone (no bag tables), enough steps for a recurrent layer to learn.
ARCH_INTENTS = {"ask_time", "weather", "play_music", "set_alarm"}
DEEP_ONLY = dict(
    embed_dim=32,
    hidden_dim=32,
    ngram_buckets=2000,
    bag_buckets=0,
    bag_char_ngrams=False,
    min_steps=120,
    batch_size=32,
    lr=6e-3,
    unknown_detector=False,
    word_coverage=False,
)


def _deep_accuracy(result: TrainResult, examples: list[Example]) -> float:
    net, labels = result.net.eval(), result.meta.labels
    batch = Batch.from_encoded([result.tokenizer.encode(e.text) for e in examples])
    with torch.inference_mode():
        out = net(batch)
    deep = out.deep
    assert out.wide is None
    truth = torch.tensor([labels.index(e.intent) for e in examples])
    return float((deep.argmax(-1) == truth).float().mean())


def test_the_default_arch_is_an_lstm(small_result: TrainResult) -> None:
    assert small_result.meta.model.arch == "lstm" and type(small_result.net.encoder.rnn) is torch.nn.LSTM


@pytest.mark.parametrize("arch, layer", [("gru", torch.nn.GRU), ("rnn", torch.nn.RNN)])
def test_every_arch_is_the_layer_it_names_and_learns(
    assistant_train: list[Example],
    assistant_test: list[Example],
    tmp_path: Path,
    arch: str,
    layer: type[torch.nn.Module],
) -> None:
    data = [e for e in assistant_train if e.intent in ARCH_INTENTS]
    test = [e for e in assistant_test if e.intent in ARCH_INTENTS]
    result = train(data, small_config(**DEEP_ONLY, arch=arch))
    assert result.meta.model.arch == arch and type(result.net.encoder.rnn) is layer
    # The recurrent layer is all there is between the embeddings and the head: it learned.
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert _deep_accuracy(result, test) > 0.6  # chance is 0.25
    loaded, meta, _ = load_net(save(result.net, result.meta, tmp_path / arch))
    assert meta.model.arch == arch and type(loaded.encoder.rnn) is layer


def test_each_path_learns_to_classify_on_its_own(
    small_result: TrainResult, assistant_test: list[Example]
) -> None:
    net, labels = small_result.net.eval(), small_result.meta.labels
    batch = Batch.from_encoded([small_result.tokenizer.encode(e.text) for e in assistant_test])
    truth = torch.tensor([labels.index(e.intent) for e in assistant_test])
    with torch.inference_mode():
        out = net(batch)
    deep, wide = out.deep, out.wide
    assert wide is not None and net.char_bag is not None
    for logits in (deep, wide, deep + wide):
        assert float((logits.argmax(-1) == truth).float().mean()) > 0.6  # chance is 0.03


def test_wide_path_of_a_batch_equals_each_utterance_alone(small_result: TrainResult) -> None:
    net, tok = small_result.net.eval(), small_result.tokenizer
    # An empty text is read as one <unk> token, which has no character n-grams:
    # one such utterance in the middle of the batch and one at its end.
    texts = ["what time is it", "", "set an alarm for 6:30 please", "天气 ??", ""]
    encoded = [tok.encode(t) for t in texts]
    with torch.inference_mode():
        together = net(Batch.from_encoded(encoded)).wide
        alone = [net(Batch.from_encoded([e])).wide for e in encoded]
    assert together is not None
    assert torch.allclose(together, torch.cat([a for a in alone if a is not None]), atol=1e-5)


def test_separate_paths_means_one_loss_per_path(
    assistant_train: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    class CountingLoss(torch.nn.CrossEntropyLoss):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            calls.append(len(target))
            return super().forward(logits, target)

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", CountingLoss)
    data = _subset(assistant_train, 10)
    per_run = []
    deep_only = {"bag_buckets": 0, "bag_char_ngrams": False}
    for options in ({"separate_paths": True}, {"separate_paths": False}, deep_only):
        calls.clear()
        result = train(data, small_config(**{**TINY, "epochs": 1}, **options))
        per_run.append(sum(calls))
    # Two losses over each training row when the paths are fitted apart, one otherwise.
    assert per_run[0] == 2 * per_run[1] == 2 * per_run[2]
    assert per_run[1] >= result.meta.data["train_examples"]
    assert result.net.bag is None and result.net.char_bag is None


def test_the_stored_temperature_is_the_one_that_fits_validation(small_result: TrainResult) -> None:
    meta, valid = small_result.meta, small_result.valid_examples
    # The network that was calibrated: no refit after it.
    assert valid and small_result.meta.training["refit_on_all_examples"] is False
    logits = torch.from_numpy(
        Predictor(small_result.net, meta, small_result.tokenizer).logits([e.text for e in valid])
    )
    targets = torch.tensor([meta.labels.index(e.intent) for e in valid])

    def nll(temperature: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits.double() / temperature, targets))

    t = meta.temperature
    assert t != 1.0
    assert nll(t) <= min(nll(1.0), nll(t * 1.2), nll(t / 1.2))


def test_the_threshold_rejects_above_chance_and_costs_few_known_rows(small_result: TrainResult) -> None:
    meta, valid = small_result.meta, small_result.valid_examples
    predictor = Predictor(small_result.net, meta, small_result.tokenizer)
    probs = predictor.probabilities([e.text for e in valid])
    targets = np.array([meta.labels.index(e.intent) for e in valid])
    known = predictor.in_scope[targets]
    chance = 1 / len(predictor.intents)
    assert chance < meta.threshold < 0.99
    correct = {}
    for threshold in (0.0, meta.threshold):
        top, _, rejected = verdicts(probs, predictor.in_scope, predictor.oos_index, threshold)
        correct[threshold] = float(((top == targets) & ~rejected)[known].mean())
    assert correct[0.0] - correct[meta.threshold] <= 0.01  # the budget is max_oos_drop, 0.25 points
    assert meta.metrics["in_scope_accuracy"] >= meta.metrics["accuracy_without_threshold"] - 0.02


def test_stratified_split_keeps_two_per_intent_for_training() -> None:
    data = [Example(f"a{i}", "a") for i in range(20)] + [Example("b1", "b"), Example("b2", "b")]
    train_part, valid = stratified_split(data, 0.1, seed=0)
    assert sum(e.intent == "a" for e in valid) == 2
    assert sum(e.intent == "b" for e in train_part) == 2
    # A handful of examples still gives one to measure on; none held out without a share.
    few = [Example(f"c{i}", "c") for i in range(3)] + [Example(f"d{i}", "d") for i in range(5)]
    _, valid = stratified_split(few, 0.1, seed=0)
    assert sorted(e.intent for e in valid) == ["c", "d"]
    assert stratified_split(few, 0.0, seed=0)[1] == []


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match="hiden_dim"):
        TrainConfig.from_options({"hiden_dim": 3})


def test_one_intent_is_not_enough() -> None:
    data = [Example("x y", "a"), Example("y z", "a"), Example("q", "oos"), Example("r", "oos")]
    with pytest.raises(ValueError, match="at least two intents"):
        train(data, small_config(**TINY))


@pytest.mark.own_training
def test_word_coverage_adds_a_share_threshold_and_leaves_the_rest(
    assistant_intents: list[Example], small_result: TrainResult
) -> None:
    plain = train(assistant_intents, small_config(word_coverage=False))
    assert plain.meta.coverage_threshold == 0.0 and "coverage_threshold" not in plain.meta.to_dict()
    covered = small_result.meta  # the default
    assert 0.0 < covered.coverage_threshold < 1.0
    assert covered.threshold == plain.meta.threshold  # the same network, the same rule
    # The share's threshold costs validation rows too, never more than a few.
    lost = plain.meta.metrics["in_scope_accuracy"] - covered.metrics["in_scope_accuracy"]
    assert 0.0 <= lost <= 0.02


def test_few_examples_are_refit_on_every_row(assistant_train: list[Example]) -> None:
    data = _subset(assistant_train, 10)
    refit = train(data, small_config(**TINY))
    first_only = train(data, small_config(**TINY, refit_below=0))
    assert refit.meta.training["refit_on_all_examples"] is True
    assert first_only.meta.training["refit_on_all_examples"] is False
    # Calibration and metrics come from the first model, identical in both runs.
    assert refit.meta.temperature == first_only.meta.temperature
    assert refit.meta.threshold == first_only.meta.threshold
    assert refit.meta.metrics == first_only.meta.metrics
    # The validation rows went back into training, and none is passed on as held out.
    held_out = first_only.valid_examples
    assert held_out and refit.valid_examples == []
    assert refit.meta.data["train_examples"] == refit.meta.data["examples"] == len(data)
    only_in_held_out = {w for e in held_out for w in e.text.lower().split()} - {
        w for e in data if e not in held_out for w in e.text.lower().split()
    }
    words = {w for w in only_in_held_out if w.isalpha()}
    assert words and words <= set(refit.tokenizer.vocab)
    assert not words & set(first_only.tokenizer.vocab)


def test_no_refit_with_a_given_validation_set_or_enough_examples(assistant_train: list[Example]) -> None:
    data = _subset(assistant_train, 10)
    train_ex, valid_ex = stratified_split(data, 0.2, 0)
    given = train(train_ex, small_config(**{**TINY, "epochs": 1}), valid_examples=valid_ex)
    assert given.meta.training["refit_on_all_examples"] is False and given.valid_examples == valid_ex
    enough = train(data, small_config(**{**TINY, "epochs": 1}, refit_below=10))
    assert enough.meta.training["refit_on_all_examples"] is False
