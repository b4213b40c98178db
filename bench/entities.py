"""Entities and intents in one pass, against a CRF on word features and TF-IDF, in one run.

Why: a chatbot needs the details of a request ("wake me at 6:30" -> time), and the
published joint models set the bar. Trains on `train.jsonl`, validates on `valid.jsonl`
and scores `test.jsonl` of a slot-annotated set (default ../shared/data/snips-slots, the
split of Goo et al. 2018): entity precision, recall and F1 (micro, exact span and type),
intent accuracy, and the batch-1 time of one utterance. Beside it, in the same run:
CRFsuite over hand-made word features (the extractor Rasa's CRFEntityExtractor and
snips-nlu use) for the entities, TF-IDF + logistic regression for the intent; and the
same model with lookup tables of the training spans' values matched beside the tagger.

    .venv/bin/python -m bench.entities [--dataset snips-slots|FOLDER] [--threads 1] [--set NAME=VALUE ...]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import (
    DATA_ROOT,
    QUICK_EPOCHS,
    QUICK_PER_INTENT,
    RESULTS,
    accuracy,
    add_set_flag,
    apply_threads,
    base_parser,
    fit_baseline,
    run_facts,
    subsample_per_intent,
    table,
    training_options,
    write_results,
)
from model.entities import tags_of
from model.predictor import Predictor
from model.tokenizer import token_spans
from training.metrics import entity_scores
from training.readers import FORMATS, OOS, Example, read_file
from training.train import train

# Published test F1 of slot filling on this split (entity F1 / intent accuracy).
ANCHORS = {
    "slot-gated (Goo et al. 2018)": "88.8 / 97.0",
    "Capsule-NLU": "91.8 / 97.3",
    "joint BERT": "97.0 / 98.6",
}


def spans(examples: Sequence[Example]) -> list[list[tuple[int, int, str]]]:
    return [[(s.start, s.end, s.entity) for s in e.entities] for e in examples]


def _word_features(words: Sequence[str], i: int) -> list[str]:
    """Rasa's CRF defaults, roughly: the word, its shape and ends, and its neighbours."""
    w = words[i]
    out = [f"w={w.lower()}", f"suffix3={w[-3:]}", f"suffix2={w[-2:]}", f"prefix2={w[:2]}"]
    out += [f"digit={w.isdigit()}", f"title={w.istitle()}", "bias"]
    for d in (-2, -1, 1, 2):
        j = i + d
        out.append(f"w{d}={words[j].lower()}" if 0 <= j < len(words) else f"w{d}=<none>")
    return out


class CrfBaseline:
    """CRFsuite on word features over the project's own tokens (so spans are comparable)."""

    def __init__(self, types: Sequence[str]):
        import pycrfsuite

        self.types = list(types)
        self.index = {(t, None, None): i for i, t in enumerate(self.types)}
        self.names = ["O", *(f"{p}-{t}" for t in self.types for p in ("B", "I"))]
        self.trainer = pycrfsuite.Trainer(verbose=False)
        self.trainer.set_params({"c1": 0.1, "c2": 0.01, "max_iterations": 100})
        self.path = ""

    def fit(self, examples: Sequence[Example], path: str) -> None:
        for e in examples:
            tokens = token_spans(e.text)
            words = [e.text[s:t] for s, t in tokens]
            tags = tags_of(tokens, e.entities, self.index)
            self.trainer.append(
                [_word_features(words, i) for i in range(len(words))], [self.names[t] for t in tags]
            )
        self.trainer.train(path)
        self.path = path
        import pycrfsuite

        # Opened once: a Tagger a call would charge the baseline's batch-1 time with a file load.
        self.tagger = pycrfsuite.Tagger()
        self.tagger.open(path)

    def predict(self, texts: Sequence[str]) -> list[list[tuple[int, int, str]]]:
        tagger = self.tagger
        out = []
        for text in texts:
            tokens = token_spans(text)
            words = [text[s:t] for s, t in tokens]
            tags = tagger.tag([_word_features(words, i) for i in range(len(words))])
            found, open_at = [], None
            for i, tag in enumerate([*tags, "O"]):
                if open_at is not None and not (tag.startswith("I-") and tag[2:] == tags[open_at][2:]):
                    found.append((tokens[open_at][0], tokens[i - 1][1], tags[open_at][2:]))
                    open_at = None
                if tag.startswith("B-") or (tag.startswith("I-") and open_at is None):
                    open_at = i
            out.append(found)
        return out


def batch1_us(fn: Any, texts: Sequence[str], rounds: int = 300) -> float:
    for t in texts[:20]:
        fn(t)
    times = []
    for t in (texts * (rounds // max(1, len(texts)) + 1))[:rounds]:
        started = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def _lookup_tables(examples: Sequence[Example]) -> dict[str, list[str]]:
    tables: dict[str, set[str]] = {}
    for e in examples:
        for span in e.entities:
            tables.setdefault(span.entity, set()).add(e.text[span.start : span.end].casefold())
    return {k: sorted(v) for k, v in sorted(tables.items())}


def _part(folder: Path, part: str) -> Path | None:
    return next((folder / f"{part}{ext}" for ext in FORMATS if (folder / f"{part}{ext}").is_file()), None)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], datasets=False)
    parser.add_argument("--dataset", default="snips-slots")
    add_set_flag(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    # A name under ../shared/data, or any folder of annotated train/test files (valid optional).
    folder = DATA_ROOT / args.dataset if (DATA_ROOT / args.dataset).is_dir() else Path(args.dataset)
    found = {part: _part(folder, part) for part in ("train", "valid", "test")}
    if found["train"] is None or found["test"] is None:
        print(f"[{args.dataset}] skipped: expected annotated train and test files at {folder}")
        return
    train_ex, test_ex = read_file(found["train"]), read_file(found["test"])
    valid_ex = read_file(found["valid"]) if found["valid"] is not None else None
    cfg = training_options(parser, args.set).model_copy(update={"seed": args.seed})
    if args.quick:
        train_ex = subsample_per_intent(train_ex, QUICK_PER_INTENT, args.seed)
        cfg = cfg.model_copy(update={"epochs": QUICK_EPOCHS})
    texts, gold = [e.text for e in test_ex], spans(test_ex)
    truth = [e.intent for e in test_ex]
    held = f"{len(valid_ex)} valid" if valid_ex is not None else "valid split from train"
    print(f"[{args.dataset}] {len(train_ex)} train, {held}, {len(test_ex)} test")

    started = time.perf_counter()
    result = train(train_ex, cfg, valid_examples=valid_ex)
    seconds = time.perf_counter() - started
    predictor = Predictor(result.net, result.meta, result.tokenizer)  # the runtime, as serving runs it
    predictions = predictor.predict_batch(texts)
    ours = entity_scores(gold, [[(s.start, s.end, s.entity) for s in p.entities] for p in predictions])
    # The top intent; with `oos` rows in the data (a label of its own), the verdict, as the
    # TF-IDF baseline predicts `oos` too.
    with_oos = OOS in truth
    ours_intent = accuracy(truth, [p.intent or OOS if with_oos else p.ranking[0].intent for p in predictions])
    ours_us = batch1_us(predictor.predict, texts)
    # Lookup tables as matches (model/patterns.py): every value of each type in the training
    # spans, matched where the tagger found nothing; the same network, so only that differs.
    tables = _lookup_tables(train_ex)
    matched = Predictor(predictor.scorer, replace(result.meta, entity_lookups=tables), result.tokenizer)
    with_lookups = entity_scores(
        gold, [[(s.start, s.end, s.entity) for s in p.entities] for p in matched.predict_batch(texts)]
    )
    lookup_us = batch1_us(matched.predict, texts)

    started = time.perf_counter()
    crf = CrfBaseline(result.meta.entity_types)
    RESULTS.mkdir(parents=True, exist_ok=True)
    crf.fit(train_ex, str(RESULTS / "entities.crfsuite"))
    tfidf, _ = fit_baseline(train_ex)
    baseline_seconds = time.perf_counter() - started
    theirs = entity_scores(gold, crf.predict(texts))
    theirs_intent = accuracy(truth, list(tfidf.predict(texts)))
    theirs_us = batch1_us(lambda t: (crf.predict([t]), tfidf.predict([t])), texts)

    rows = [
        ["intently (int8)", ours, ours_intent, ours_us, seconds],
        ["intently + lookup matches", with_lookups, ours_intent, lookup_us, seconds],
        ["CRFsuite + TF-IDF", theirs, theirs_intent, theirs_us, baseline_seconds],
    ]
    print()
    print(
        table(
            ["system", "entity P", "entity R", "entity F1", "intent acc", "batch-1 µs", "train s"],
            [
                [
                    name,
                    f"{100 * m['entity_precision']:.1f}",
                    f"{100 * m['entity_recall']:.1f}",
                    f"{100 * m['entity_f1']:.1f}",
                    f"{100 * acc:.1f}",
                    f"{us:.0f}",
                    f"{s:.0f}",
                ]
                for name, m, acc, us, s in rows
            ],
        )
    )
    print("published (entity F1 / intent accuracy): " + "; ".join(f"{k} {v}" for k, v in ANCHORS.items()))
    worst = sorted(ours["entities"].items(), key=lambda kv: kv[1]["f1"])[:5]
    print("weakest types: " + ", ".join(f"{k} {100 * v['f1']:.0f} ({v['support']})" for k, v in worst))
    path = write_results(
        "entities",
        {
            "run": run_facts(args),
            "options": cfg.model_dump(),
            "systems": {
                name: {"entity": m, "intent_accuracy": acc, "batch1_us": us, "train_seconds": s}
                for name, m, acc, us, s in rows
            },
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
