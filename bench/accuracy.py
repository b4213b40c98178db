"""Test accuracy of the project against a TF-IDF + LogisticRegression baseline, clean and misspelled.

Why: the project claims a recurrent model with hashed character n-grams is
accurate and robust to typos. This puts each of those claims next to the
strongest cheap baseline, trained on the same split in the same run, plus an
ablation without sub-word features to show what the n-grams buy on typos.

    .venv/bin/python -m bench.accuracy [--datasets banking77 snips] [--seed 0] [--quick]
                                       [--no-subword-ablation] [--per-intent N]
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from bench.common import (
    QUICK_EPOCHS,
    QUICK_PER_INTENT,
    accuracy,
    apply_threads,
    base_parser,
    exit_if_nothing,
    fit_baseline,
    load_dataset,
    pct,
    project_labels,
    run_facts,
    subsample_per_intent,
    table,
    train_project,
    write_results,
)
from training.metrics import summary
from training.readers import Example
from training.train import TrainConfig

# QWERTY neighbours (same row and the rows above/below): a plausible slip of the finger.
_ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
KEYBOARD: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _ch in enumerate(_row):
        near = [_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_ROWS):
                near += [_ROWS[_other][j] for j in (_c - 1, _c, _c + 1) if 0 <= j < len(_ROWS[_other])]
        KEYBOARD[_ch] = "".join(near)

TYPO_RATE = 1 / 3
MIN_WORD_LETTERS = 4


def misspell_word(word: str, rng: random.Random) -> str:
    """One typo in `word`: swap two adjacent letters, drop, duplicate, or hit a neighbouring key."""
    letters = [i for i, ch in enumerate(word) if ch.isalpha()]
    op = rng.choice(("swap", "drop", "double", "neighbour"))
    chars = list(word)
    if op == "swap":
        pairs = [i for i in letters if i + 1 < len(word) and word[i + 1].isalpha() and word[i] != word[i + 1]]
        if pairs:
            i = rng.choice(pairs)
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            return "".join(chars)
        op = "drop"  # nothing to swap (e.g. "aaaa"): drop instead
    i = rng.choice(letters)
    if op == "neighbour":
        keys = KEYBOARD.get(chars[i].lower(), "")
        if keys:
            new = rng.choice(keys)
            chars[i] = new.upper() if chars[i].isupper() else new
            return "".join(chars)
        op = "drop"  # not a QWERTY letter (é, ß): drop instead
    if op == "drop":
        del chars[i]
    else:
        chars.insert(i, chars[i])
    return "".join(chars)


def misspell(texts: Sequence[str], seed: int) -> tuple[list[str], float]:
    """Texts with ~1 in 3 words of 4+ letters misspelled, deterministically; and the share changed."""
    rng = random.Random(f"typos-{seed}")
    out, eligible, changed = [], 0, 0
    for text in texts:
        words = text.split(" ")
        for k, word in enumerate(words):
            if sum(ch.isalpha() for ch in word) < MIN_WORD_LETTERS:
                continue
            eligible += 1
            if rng.random() < TYPO_RATE:
                words[k] = misspell_word(word, rng)
                changed += words[k] != word
        out.append(" ".join(words))
    return out, changed / max(eligible, 1)


def score_project(
    name: str, train_ex: list[Example], texts: list[str], noisy: list[str], y: list[str], cfg: TrainConfig
) -> dict[str, Any]:
    predictor, result, seconds = train_project(train_ex, cfg)
    with_thr, argmax = project_labels(predictor, texts)
    noisy_thr, noisy_argmax = project_labels(predictor, noisy)
    s = summary(y, with_thr)
    return {
        "system": name,
        "accuracy": s["accuracy"],
        "accuracy_without_threshold": accuracy(y, argmax),
        "macro_f1": s["macro_f1"],
        "misspelled_accuracy": accuracy(y, noisy_thr),
        "misspelled_accuracy_without_threshold": accuracy(y, noisy_argmax),
        "train_seconds": round(seconds, 2),
        "threshold": result.meta.threshold,
        "temperature": result.meta.temperature,
        "epochs_run": result.meta.training["epochs_run"],
        "config": {"ngram_buckets": cfg.ngram_buckets, "epochs": cfg.epochs, "seed": cfg.seed},
    }


def score_baseline(
    train_ex: list[Example], texts: list[str], noisy: list[str], y: list[str]
) -> dict[str, Any]:
    model, seconds = fit_baseline(train_ex)
    pred = list(model.predict(texts))
    noisy_pred = list(model.predict(noisy))
    s = summary(y, pred)
    return {
        "system": "baseline: tfidf+logreg",
        "accuracy": s["accuracy"],
        "accuracy_without_threshold": s["accuracy"],  # the baseline has no threshold
        "macro_f1": s["macro_f1"],
        "misspelled_accuracy": accuracy(y, noisy_pred),
        "misspelled_accuracy_without_threshold": accuracy(y, noisy_pred),
        "train_seconds": round(seconds, 2),
    }


def run_dataset(
    name: str,
    train_ex: list[Example],
    test_ex: list[Example],
    seed: int,
    quick: bool,
    ablation: bool,
    per_intent: int | None = None,
) -> dict[str, Any]:
    cfg = TrainConfig(seed=seed)
    if per_intent:
        train_ex = subsample_per_intent(train_ex, per_intent, seed)
    if quick:
        train_ex = subsample_per_intent(train_ex, QUICK_PER_INTENT, seed)
        cfg = cfg.model_copy(update={"epochs": QUICK_EPOCHS})
    texts = [e.text for e in test_ex]
    y = [e.intent for e in test_ex]
    noisy, typo_share = misspell(texts, seed)
    share = f"{100 * typo_share:.0f}%"
    print(f"[{name}] {len(train_ex)} train, {len(test_ex)} test; {share} of 4+ letter words misspelled")
    systems = [score_project("project: bilstm (default)", train_ex, texts, noisy, y, cfg)]
    if ablation:
        systems.append(
            score_project(
                "project: ngram_buckets=0",
                train_ex,
                texts,
                noisy,
                y,
                cfg.model_copy(update={"ngram_buckets": 0}),
            )
        )
    systems.append(score_baseline(train_ex, texts, noisy, y))
    return {
        "train_examples": len(train_ex),
        "test_examples": len(test_ex),
        "misspelled_word_share": round(typo_share, 4),
        "misspelled_examples": [
            {"clean": c, "misspelled": m} for c, m in list(zip(texts, noisy, strict=True))[:5]
        ],
        "systems": systems,
    }


def main() -> None:
    parser = base_parser("Accuracy of the project vs a TF-IDF + LogisticRegression baseline.")
    parser.add_argument(
        "--no-subword-ablation",
        action="store_true",
        help="skip the extra training run with ngram_buckets=0",
    )
    parser.add_argument(
        "--per-intent",
        type=int,
        default=None,
        metavar="N",
        help="train on N examples per intent (same test set): the few-examples start of a new bot",
    )
    args = parser.parse_args()
    if args.per_intent is not None and args.per_intent < 2:
        parser.error("--per-intent must be at least 2 (training needs two examples of each intent)")
    apply_threads(args.threads)
    loaded = {name: data for name in args.datasets if (data := load_dataset(name)) is not None}
    exit_if_nothing(loaded)

    results: dict[str, Any] = {}
    rows = []
    for name, (train_ex, test_ex) in loaded.items():
        results[name] = run_dataset(
            name, train_ex, test_ex, args.seed, args.quick, not args.no_subword_ablation, args.per_intent
        )
        for s in results[name]["systems"]:
            rows.append(
                [
                    name,
                    s["system"],
                    pct(s["accuracy"]),
                    pct(s["accuracy_without_threshold"]),
                    pct(s["macro_f1"]),
                    pct(s["misspelled_accuracy"]),
                    f"{s['train_seconds']:.1f}",
                    "-" if "threshold" not in s else f"{s['threshold']:.2f}",
                ]
            )
    headers = [
        "dataset",
        "system",
        "acc %",
        "acc no-thr %",
        "macro F1 %",
        "misspelled acc %",
        "train s",
        "thr",
    ]
    print()
    print(table(headers, rows))
    print("acc: the project with its out-of-scope threshold (a rejection counts as wrong); no-thr: argmax.")
    name = f"accuracy-{args.per_intent}-per-intent" if args.per_intent else "accuracy"
    path = write_results(name, {"run": run_facts(args), "quick": args.quick, "datasets": results})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
