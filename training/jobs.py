"""A training job's process: train the queued job's version, store it, activate it by its policy.

The service queues a job (store/jobs.py), and any of its workers, on any
replica, may claim the next one; the job itself then runs as

    python -m training.jobs STORE JOB_ID

in its own process, so a crash or a kill cannot touch the serving workers,
and a version appears in the store whole or not at all.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from model.artifact import ModelMeta
from model.predictor import Predictor
from store.jobs import JobError, JobInput, JobStore, now_text, open_job_store
from store.model_store import DATABASE_URL_ENV, ModelStore, StoreError, StoreUnavailable, open_store
from store.review import open_review_store
from training import threads
from training.config import TrainConfig
from training.evaluate import version_report_files
from training.metrics import summary
from training.readers import OOS, Example, NluData, appended
from training.train import Progress, TrainResult, stratified_split, train

HEARTBEAT_SECONDS = 2.0
MIN_HELD_OUT = 20  # fewer held-out examples than this cannot tell two models apart


# --- the job process -------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: if the serving worker that started this job dies, so does the job."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _as_examples(rows: Sequence[dict[str, Any]]) -> list[Example]:
    return [Example.from_json(r) for r in rows]


def _with_base_rules(nlu: NluData, base: ModelMeta) -> NluData:
    """An appended job keeps the active version's synonyms, patterns and responses; its own win."""
    merged = NluData.from_rules(
        {
            "synonyms": base.entity_synonyms,
            "regexes": base.entity_regexes,
            "lookups": base.entity_lookups,
            "responses": base.responses,
        }
    )
    merged.synonyms.update(nlu.synonyms)
    merged.regexes.update(nlu.regexes)
    merged.lookups.update(nlu.lookups)
    merged.responses.update(nlu.responses)
    return merged


def held_out_accuracy(predictor: Predictor, examples: Sequence[Example]) -> float:
    y_pred = [p.intent or OOS for p in predictor.predict_batch([e.text for e in examples], top_k=1)]
    return float(summary([e.intent for e in examples], y_pred)["accuracy"])


@dataclass
class _JobData:
    """What a job trains on, and what its version is judged on."""

    kept: list[Example]  # the version's data, as the store keeps it
    training: list[Example]
    valid: list[Example]
    held_out: list[Example]  # the active version's held-out rows: both models are compared on them
    nlu: NluData


def run_job(store: ModelStore, job_id: str) -> None:
    """Train the job's version, add it to the store, and activate it as its policy says."""
    jobs = open_job_store(store)
    job = jobs.get(job_id)
    queued = jobs.input(job_id)
    base_version = store.active()
    jobs.update(job_id, base_version=base_version, pid=os.getpid())
    with _heartbeat(jobs, job_id) as reaped:
        try:
            config = TrainConfig.from_options(queued.options)
            data = _job_data(store, queued, job["mode"], base_version, config)

            def progress(p: Progress) -> None:
                if reaped.is_set():  # another replica may run the next job already: stop here
                    raise _Reaped()
                with suppress(StoreUnavailable):  # a database restart does not fail the job
                    jobs.update(job_id, epoch=p.epoch, epochs=p.epochs)

            unlabelled = _review_transfer(store, queued.review_items, config)
            result = train(
                data.training,
                config,
                valid_examples=data.valid,
                progress=progress,
                nlu=data.nlu,
                unlabelled=unlabelled,
            )
            result.meta.training["job"] = job_id
            if unlabelled:
                result.meta.training["review_unlabelled"] = len(unlabelled)
            result.meta.training["mode"] = job["mode"]
            version = store.add(
                result.net, result.meta, data.kept, result.valid_examples, version_report_files(result)
            )
            activated, reason, comparison = _decide_activation(
                store, job["activate"], base_version, result, data.held_out, queued.tolerance
            )
            if not jobs.beat(job_id):
                raise _Reaped()
            if activated:
                store.activate(version)
                _mark_used(store, queued.review_items, version)
            jobs.update(
                job_id,
                only_if_running=True,
                state="succeeded",
                finished_at=now_text(),
                version=version,
                activated=int(activated),
                activation_reason=reason,
                metrics=json.dumps({"validation": result.meta.metrics, **comparison}),
            )
        except _Reaped:
            sys.stderr.write(f"job {job_id} was reaped (marked failed elsewhere): not activated\n")
        except Exception as exc:
            message = str(exc) if isinstance(exc, ValueError | StoreError) else f"{type(exc).__name__}: {exc}"
            jobs.update(job_id, only_if_running=True, state="failed", finished_at=now_text(), error=message)
            traceback.print_exc()


def _review_transfer(store: ModelStore, review_items: Sequence[str], config: TrainConfig) -> list[str]:
    """A `from_review` job also offers the inbox's unlabelled texts to distillation: real traffic,
    which the teacher labels for the student where it distils (ignored where it does not)."""
    if not review_items or not config.transfer_rows:
        return []
    try:
        return open_review_store(store).unlabelled_texts(config.transfer_rows)
    except StoreError as exc:  # the labelled items are what the job is for: train without these
        sys.stderr.write(f"the review inbox's unlabelled texts are not used ({exc})\n")
        return []


def _mark_used(store: ModelStore, items: Sequence[str], version: str) -> None:
    """The review inbox's items the job trained on are in the active version now: out of the next
    `from_review` job. A failure only leaves them to be appended again (the same texts: no harm)."""
    if not items:
        return
    try:
        open_review_store(store).mark_used(items, version)
    except StoreError as exc:
        sys.stderr.write(f"review items not marked used ({exc}); a later from_review job adds them again\n")


class _Reaped(Exception):
    """Another replica marked this job failed (its heartbeats stopped landing): it must not activate."""


@contextmanager
def _heartbeat(jobs: JobStore, job_id: str) -> Iterator[threading.Event]:
    """Beat while the job runs: a job whose beats stop is reaped as failed. The event yielded is
    set once a beat finds the job no longer running (reaped meanwhile)."""
    stop, reaped = threading.Event(), threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                if not jobs.beat(job_id):
                    reaped.set()
                    return
            except StoreUnavailable:  # the database restarts: the next beat may land, or the job is reaped
                continue

    threading.Thread(target=beat, daemon=True).start()
    try:
        yield reaped
    finally:
        stop.set()


def _job_data(
    store: ModelStore, queued: JobInput, mode: str, base_version: str | None, config: TrainConfig
) -> _JobData:
    """`replace`: the job's examples, split afresh. `append`: the active version's data plus them,
    validated on the active version's held-out rows (those the job's examples leave) plus a share of
    the new ones, so that both versions are judged on rows neither trained on."""
    new = _as_examples(queued.examples)
    nlu = NluData.from_rules(queued.rules)
    held_out = _as_examples(store.read_data(base_version, held_out=True)) if base_version else []
    if mode != "append":
        training, valid = stratified_split(new, config.valid_fraction, config.seed)
        return _JobData(new, training, valid, held_out, nlu)
    if not base_version:
        raise JobError("mode 'append' needs an active version to append to")
    kept = appended(new, _as_examples(store.read_data(base_version)))
    nlu = _with_base_rules(nlu, store.meta(base_version))
    fixed = {e.text.casefold() for e in new}
    held_out = [e for e in held_out if e.text.casefold() not in fixed]
    if len(held_out) < MIN_HELD_OUT:  # the base version kept no usable held-out set: split afresh
        training, valid = stratified_split(kept, config.valid_fraction, config.seed)
        return _JobData(kept, training, valid, held_out, nlu)
    held = {(e.text, e.intent) for e in held_out}
    new_train, new_valid = stratified_split(new, config.valid_fraction, config.seed)
    training = [e for e in kept[: len(kept) - len(new)] if (e.text, e.intent) not in held] + new_train
    return _JobData(kept, training, held_out + new_valid, held_out, nlu)


def _decide_activation(
    store: ModelStore,
    policy: str,
    base_version: str | None,
    result: TrainResult,
    held_out: list[Example],
    tolerance: float,
) -> tuple[bool, str, dict[str, Any]]:
    if policy == "always":
        return True, "activation policy 'always'", {}
    if policy == "never":
        return False, "activation policy 'never'", {}
    if base_version is None:
        return True, "no active version to compare with", {}
    # Both models on the same examples, held out from both: the active version's validation set.
    examples = held_out if len(held_out) >= MIN_HELD_OUT else result.valid_examples
    if not examples:
        return False, "no held-out examples to compare on; activate by hand", {}
    new = held_out_accuracy(Predictor(result.net, result.meta, result.tokenizer), examples)
    active = held_out_accuracy(Predictor.load(store.path(base_version)), examples)
    comparison = {
        "comparison": {
            "examples": len(examples),
            "new_accuracy": round(new, 5),
            "active_accuracy": round(active, 5),
            "tolerance": tolerance,
        }
    }
    if new + tolerance >= active:
        return (
            True,
            f"accuracy {new:.4f} vs active {active:.4f} on {len(examples)} held-out examples",
            comparison,
        )
    return (
        False,
        (
            f"not activated: accuracy {new:.4f} is below the active version's {active:.4f} "
            f"(tolerance {tolerance}) on {len(examples)} held-out examples"
        ),
        comparison,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m training.jobs STORE JOB_ID\n")
        return 2
    _die_with_parent()
    # One thread unless told otherwise: the other cores are the serving workers'.
    threads.configure(None if os.environ.get(threads.THREADS_ENV) else 1)
    store = open_store(argv[0], os.environ.get(DATABASE_URL_ENV))
    try:
        run_job(store, argv[1])
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
