"""The built-in default model, as the server loads it, on the test split of its own data set."""

from __future__ import annotations

from pathlib import Path

from model.predictor import Predictor
from store.directory import DirectoryStore
from training.evaluate import evaluate
from training.readers import Example

# A few rows under what it scores today: a real
# regression fails, the noise of a changed seed or library does not.
IN_SCOPE_ACCURACY = 0.92  # of 240 in-scope rows
OOS_RECALL = 0.9  # of 40 out-of-scope rows
OOS_PRECISION = 0.85
# Utterances of the built-in intents, and requests that none of them covers.
KNOWN = {
    "What time is it?": "ask_time",
    "set an alarm for 7 tomorrow morning": "set_alarm",
    "will it rain in paris tomorrow": "weather",
    "turn the lights off": "lights_off",
    "play some jazz": "play_music",
    "thanks a lot": "thank_you",
}
OUT_OF_SCOPE = [
    "how do I bake sourdough bread?",
    "what is the capital of peru",
    "book me a flight to lisbon",
    "how much is my car insurance",
]


def test_the_built_in_model_on_its_own_test_split(
    default_store_template: Path, assistant_test: list[Example]
) -> None:
    store = DirectoryStore(default_store_template)
    version = store.active()
    assert version is not None
    trained_on = {r["text"].casefold() for r in store.read_data(version)}
    assert not trained_on & {e.text.casefold() for e in assistant_test}  # a test split, not seen
    served = Predictor.load(store.path(version), quantize=True)  # as `intently serve` loads it
    metrics = evaluate(served, assistant_test)["metrics"]
    assert metrics["n"] == len(assistant_test) == 280
    assert metrics["in_scope_accuracy"] >= IN_SCOPE_ACCURACY, metrics
    assert metrics["oos_recall"] >= OOS_RECALL and metrics["oos_precision"] >= OOS_PRECISION, metrics
    answers = served.predict_batch([*KNOWN, *OUT_OF_SCOPE])
    assert [p.intent for p in answers] == [*KNOWN.values(), *[None] * len(OUT_OF_SCOPE)]
    assert [p.out_of_scope for p in answers] == [False] * len(KNOWN) + [True] * len(OUT_OF_SCOPE)
