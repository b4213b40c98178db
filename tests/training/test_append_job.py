"""An append job as it runs on the server: new examples added to the active version's.

The half that adds a new intent is tested end to end (tests/e2e/test_lifecycle.py); this is
the other half: what the active version knew stays right, an example of the same text
relabels the old one, and the rows the active version held out stay out of training.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.routes.training_jobs import _check_data
from model.predictor import Predictor
from model.tokenizer import tokenize
from store.directory import DirectoryStore
from store.jobs import JobError, JobRequest, open_job_store
from tests.conftest import NEW_INTENT, SMALL
from training.evaluate import evaluate
from training.job_request import submit
from training.jobs import run_job
from training.readers import Example
from training.train import TrainResult

# A training row of the built-in set, relabelled as a team fixes a misclassification;
# sent in another case, since the same text is compared case-folded.
RELABELLED = "tell me a joke about food"


def _words(examples: list[Example]) -> set[str]:
    return {w for e in examples for w in tokenize(e.text) if w.isalpha()}


@pytest.mark.own_training
def test_append_keeps_old_intents_relabels_same_text_and_keeps_held_out_rows_out(
    small_result: TrainResult, assistant_intents: list[Example], assistant_test: list[Example], tmp_path: Path
) -> None:
    store = DirectoryStore(tmp_path / "store")
    held_out = small_result.valid_examples
    base = store.add(small_result.net, small_result.meta, assistant_intents, held_out)
    store.activate(base)
    (old,) = [e for e in assistant_intents if e.text == RELABELLED]
    assert old.intent == "tell_joke" and old not in held_out  # a row the active version trained on

    new = [Example(t, "order_food") for t in NEW_INTENT] + [Example(RELABELLED.capitalize(), "order_food")]
    jobs = open_job_store(store)
    job = submit(jobs, JobRequest(new, "append", "always", dict(SMALL)))
    assert jobs.claim_next() == job["id"]  # as a dispatcher does before it starts the job
    run_job(store, job["id"])
    done = jobs.get(job["id"])
    assert done["state"] == "succeeded", done["error"]
    version = done["version"]
    assert store.active() == version != base

    # The relabelled text is stored once, with its new label; everything else is kept.
    rows = store.read_data(version)
    assert [r["intent"] for r in rows if r["text"].casefold() == RELABELLED] == ["order_food"]
    assert len(rows) == len(assistant_intents) + len(new) - 1

    # The active version's held-out rows are held out again, and no word only they hold was learned.
    valid_rows = store.read_data(version, held_out=True)
    assert {(e.text, e.intent) for e in held_out} <= {(r["text"], r["intent"]) for r in valid_rows}
    meta = store.meta(version)
    assert meta.data["train_examples"] <= len(rows) - len(valid_rows)
    trained = [e for e in assistant_intents if e not in held_out]
    only_held_out = _words(held_out) - _words(trained) - _words(new)
    assert only_held_out and not only_held_out & set(meta.trained_vocab)

    # What it knew is still right, beside the new intent and the new label.
    before = evaluate(Predictor.load(store.path(base)), assistant_test)["metrics"]
    predictor = Predictor.load(store.path(version))
    after = evaluate(predictor, assistant_test)["metrics"]
    assert after["in_scope_accuracy"] >= before["in_scope_accuracy"] - 0.03
    assert after["oos_recall"] >= before["oos_recall"] - 0.1
    # (One relabelled row among fifty of its old intent need not flip the small model's answer:
    # the stored data above is what proves the relabel.)
    answers = predictor.predict_batch(["please order me a pizza", "food delivery please"])
    assert [p.intent for p in answers] == ["order_food"] * 2
    assert predictor.predict("tell me a joke").intent == "tell_joke"


def test_append_with_no_active_version_is_refused_and_its_job_fails_saying_why(tmp_path: Path) -> None:
    """Nothing to append to: the API's check refuses the job (a 422 naming the reason); a queued job
    that meets a store with no active version when it runs (queued straight into the job store, or
    on a replica whose store is still empty) fails with the same reason, and adds no version.

    (A server fills an empty store with the built-in model before it answers, so the check is
    called here as the route calls it, not through HTTP.)"""
    reason = "mode 'append' needs an active version to append to"
    new = [Example(t, "order_food") for t in NEW_INTENT]
    request = JobRequest(new, "append", "always", dict(SMALL, epochs=1))
    store = DirectoryStore(tmp_path / "store")
    with pytest.raises(JobError, match=reason):
        _check_data(store, request.mode, new)

    jobs = open_job_store(store)
    job = submit(jobs, request)
    assert jobs.claim_next() == job["id"]
    run_job(store, job["id"])
    failed = jobs.get(job["id"])
    assert (failed["state"], failed["error"], failed["version"]) == ("failed", reason, None)
    assert store.list_ids() == [] and store.active() is None
