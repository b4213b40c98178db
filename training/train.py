"""The training loop, top to bottom: split, vocabulary, network, epochs, calibration, artifact."""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from model.artifact import ModelMeta, check_bounds
from model.config import ModelConfig, TokenizerConfig
from model.coverage import WordCoverage
from model.detector import DetectorParams
from model.entities import Kind, crf_loss, kind_of, tags_of
from model.network import Batch, IntentNet
from model.predictor import known_shares, verdicts
from model.tokenizer import UNK_ID, Encoded, Tokenizer, token_spans, tokenize
from training.calibration import choose_coverage_threshold, choose_threshold, fit_detector, fit_temperature
from training.distill import augmented_rows, fit_teacher, neighbours, teacher_text
from training.metrics import summary as metric_summary
from training.pretrained import DEFAULT_ENCODER, load_encoder, packages_installed
from training.readers import OOS, DataSummary, Example, NluData, checksum, clean
from training.vectors import VocabularyVectors, for_vocabulary

# Enough rows to find an intent's near neighbours; bounds the model's size on big data sets.
MAX_DETECTOR_ROWS_PER_INTENT = 300

# Far past any sensible intent model; they keep a job within memory and within hours.
_OPTION_BOUNDS: dict[str, tuple[float, float]] = {
    "embed_dim": (1, 2048),
    "hidden_dim": (1, 2048),
    "num_layers": (1, 8),
    "ngram_buckets": (0, 1_000_000),
    "bag_buckets": (0, 1_000_000),
    "max_tokens": (1, 1024),
    "epochs": (1, 1000),
    "min_steps": (0, 100_000),
    "refit_below": (0, 1_000_000),
    "patience": (0, 1000),
    "batch_size": (1, 4096),
    "dropout": (0.0, 0.99),
    "word_dropout": (0.0, 0.99),
    "label_smoothing": (0.0, 0.99),
    "valid_fraction": (0.0, 0.9),
    "lr": (0.0, 10.0),
    "max_oos_drop": (0.0, 1.0),
    "vectors_words": (0, 1_000_000),
    "min_vectors_coverage": (0.0, 1.0),
    "teacher_c": (1e-4, 1e4),
    "augment_copies": (0, 1000),
    "augment_budget": (0, 2_000_000),
    "distill_weight": (0.0, 100.0),
    "teacher_below": (0, 1_000_000),
    "reject_known": (0.0, 0.9),
}


@dataclass
class TrainConfig:
    """Training options; every field can be set from the command line or the jobs API."""

    arch: str = "lstm"
    embed_dim: int = 256
    hidden_dim: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "maxmean"
    dropout: float = 0.4
    ngram_buckets: int = 50_000
    bag_buckets: int = 100_000
    bag_char_ngrams: bool = True
    # Fit the deep and the wide path each to the labels on its own, then add their
    # logits (a product of two experts). Fitted jointly, whichever path learns the
    # training set first leaves the other little gradient: measured +0.3 to +5
    # points, most with few examples per intent (docs/RESEARCH.md).
    separate_paths: bool = True
    max_tokens: int = 64
    epochs: int = 12
    min_steps: int = 1000
    patience: int = 0
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    word_dropout: float = 0.1
    clip_norm: float = 1.0
    balance: float = 0.5
    valid_fraction: float = 0.1
    # With fewer examples than this for the median intent, the validation split made here
    # and no teacher, train a second model on every row once the first has set the
    # temperature and thresholds, and keep those: with ten examples an intent, one of them
    # is the intent's whole validation share (docs/RESEARCH.md). 0 turns it off.
    refit_below: int = 40
    max_oos_drop: float = 0.0025
    # A second out-of-scope threshold, on the top probability times the share of words
    # seen in training (model/coverage.py), with a budget of its own among the rows the
    # first keeps. A banking77 model then rejected 83% of snips's requests instead of
    # 72%, at 0.06 points of in-scope accuracy (docs/RESEARCH.md).
    word_coverage: bool = True
    # The unknown-intent detector (model/detector.py), and the share of known-intent requests
    # it turns away (set on validation rows) to catch requests of intents nobody wrote
    # examples of. Data with `oos` rows shows what to reject: there, and with 0, it keeps
    # to `max_oos_drop` as the probability threshold does (docs/training.md).
    unknown_detector: bool = True
    reject_known: float = 0.1
    # Pretrained word vectors: a sentence encoder (Hugging Face name or directory) or a
    # table file from `intently vectors build`; "auto" is the default encoder when the
    # pretrained extras are installed, "" none.
    vectors: str = "auto"
    # Frequent words of the vectors' source added to the vocabulary beyond the training
    # words, so that common words no example used still mean something when served.
    vectors_words: int = 20_000
    # Below this share of the training text's words known to the source (another
    # language, say), the vectors would mostly be noise: train without them.
    min_vectors_coverage: float = 0.5
    # Distillation: a sentence encoder whose logistic regression on the team's examples
    # teaches the network on augmented utterances; "auto" as for vectors, "" none.
    teacher: str = "auto"
    # "auto" distils only when the median intent has fewer examples than this: with few
    # examples the teacher knows far more than the data says; with many the network
    # alone did better (docs/RESEARCH.md).
    teacher_below: int = 25
    teacher_c: float = 100.0
    augment_copies: int = 20  # augmented utterances per example, at most
    augment_budget: int = 40_000  # augmented utterances in all, at most
    distill_weight: float = 3.0
    seed: int = 0
    # Keep the weights at the end of the cosine schedule rather than the epoch with
    # the best validation accuracy: ~1k validation rows are too noisy to choose by
    # (measured: the chosen epoch scored 1.3 points under the final one on banking77).
    keep_last: bool = True

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TrainConfig:
        """Options from a user or an HTTP request: unknown names, wrong types and sizes refused.

        Checked here because a job runs later in its own process: `embed_dim=10**6`
        or `epochs=10**9` would only fail there, after exhausting memory or the job slot.
        """
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown training options: {unknown}; known: {sorted(known)}")
        for name, value in options.items():
            kind = str(known[name])
            ok = {
                "int": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, int | float) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "str": isinstance(value, str),
            }.get(kind, True)
            if not ok:
                raise ValueError(f"option {name} must be of type {kind}, not {value!r}"[:200])
            low, high = _OPTION_BOUNDS.get(name, (None, None))
            if low is not None and not low <= value <= high:
                raise ValueError(f"option {name}={value!r} is outside {low}..{high}"[:200])
        return cls(**options)

    def model_config(
        self,
        vocab_size: int,
        num_labels: int,
        vectors_dim: int = 0,
        learned_vocab: int = 0,
        entity_types: int = 0,
    ) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            num_labels=num_labels,
            vectors_dim=vectors_dim,
            learned_vocab=learned_vocab,
            entity_tags=1 + 2 * entity_types if entity_types else 0,
            arch=self.arch,  # type: ignore[arg-type]
            embed_dim=self.embed_dim,
            hidden_dim=self.hidden_dim,
            num_layers=self.num_layers,
            bidirectional=self.bidirectional,
            pooling=self.pooling,  # type: ignore[arg-type]
            dropout=self.dropout,
            ngram_buckets=self.ngram_buckets,
            bag_buckets=self.bag_buckets,
            bag_char_ngrams=self.bag_char_ngrams,
        )

    def tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(max_tokens=self.max_tokens, ngram_buckets=self.ngram_buckets)


@dataclass
class Progress:
    epoch: int
    epochs: int
    loss: float
    valid_accuracy: float | None


@dataclass
class TrainResult:
    net: IntentNet
    meta: ModelMeta
    tokenizer: Tokenizer
    summary: DataSummary
    valid_examples: list[Example] = field(default_factory=list)  # held out: the store keeps them
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stratified_split(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out about `fraction` of each intent, always leaving at least two to train on.

    An intent of three or more examples gives at least one: with Rasa's demo bots (five or
    so an intent) the share rounded down to none, and no out-of-scope threshold was set.
    """
    rng = random.Random(seed)
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_intent[ex.intent].append(ex)
    train, valid = [], []
    for intent in sorted(by_intent):
        group = by_intent[intent][:]
        rng.shuffle(group)
        k = min(max(round(len(group) * fraction), 1 if fraction > 0 else 0), len(group) - 2)
        valid.extend(group[: max(k, 0)])
        train.extend(group[max(k, 0) :])
    return train, valid


def balanced_indices(labels: Sequence[int], balance: float) -> np.ndarray:
    """Every example once, plus repeats of rare intents up to `balance` x the median intent size.

    A brand-new intent added with five examples to a set of fifty per intent
    would otherwise be drowned out and never predicted.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    present = counts[counts > 0]
    target = int(balance * float(np.median(present))) if balance > 0 and len(present) else 0
    index = np.arange(len(labels))
    extra = []
    for label, count in enumerate(counts):
        if 0 < count < target:
            members = index[np.asarray(labels) == label]
            extra.append(np.resize(members, target - count))
    return np.concatenate([index, *extra]) if extra else index


def _batches(pool: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(pool)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _word_dropout(batch: Batch, p: float, generator: torch.Generator) -> Batch:
    """Replace known words by <unk> (their n-grams stay): teaches the model to read unseen words."""
    if p <= 0:
        return batch
    drop = (torch.rand(batch.words.shape, generator=generator) < p) & (batch.words > UNK_ID)
    return replace(batch, words=batch.words.masked_fill(drop, UNK_ID))


def train(
    examples: Sequence[Example],
    config: TrainConfig | None = None,
    valid_examples: Sequence[Example] | None = None,
    progress: Callable[[Progress], None] | None = None,
    show_progress: bool = False,
    nlu: NluData | None = None,
) -> TrainResult:
    """`nlu`: the synonyms, regexes, lookup tables and responses the data files held beside
    `examples` (training/readers.py `read_data`); they go into the artifact."""
    cfg = config or TrainConfig()
    started = time.monotonic()
    seed_everything(cfg.seed)
    data, summary = clean(examples)
    if valid_examples is None:
        train_ex, valid_ex = stratified_split(data, cfg.valid_fraction, cfg.seed)
    else:
        train_ex, valid_ex = data, list(valid_examples)
    labels = sorted({e.intent for e in data})
    if len([lab for lab in labels if lab != OOS]) < 2:
        raise ValueError("need at least two intents (besides 'oos') to train a classifier")
    unknown = sorted({e.intent for e in valid_ex} - set(labels))
    if unknown:
        raise ValueError(f"validation data has intents the training data lacks: {unknown[:10]}")
    label_index = {lab: i for i, lab in enumerate(labels)}
    kinds = sorted({kind_of(e) for ex in data for e in ex.entities}, key=lambda k: tuple(x or "" for x in k))

    net, tokenizer, history, pretrained = _fit(
        train_ex, valid_ex, label_index, kinds, cfg, progress, show_progress
    )

    temperature, threshold, coverage_threshold, detector, metrics = 1.0, 0.0, 0.0, None, {}
    if valid_ex:
        temperature, threshold, coverage_threshold, detector, metrics = _calibrate(
            net, tokenizer, train_ex, valid_ex, labels, cfg
        )

    sizes = [n for intent, n in summary.per_intent.items() if intent != OOS]
    # Not after distillation: there the refit scored 0.4 points lower in both probes, for
    # twice the training time (docs/RESEARCH.md).
    distilled = bool((pretrained.get("teacher") or {}).get("source"))
    refit = (
        valid_examples is None
        and bool(valid_ex)
        and float(np.median(sizes)) < cfg.refit_below
        and not distilled
    )
    if refit:
        # The validation rows go back in. Metrics, temperature and thresholds stay those of
        # the first model: the second has no rows left to measure itself on.
        seed_everything(cfg.seed)
        net, tokenizer, more, pretrained = _fit(
            train_ex + valid_ex, [], label_index, kinds, cfg, progress, show_progress
        )
        history += [{**h, "refit": True} for h in more]
        if detector is not None:
            _keep_rows(net, tokenizer, train_ex + valid_ex, label_index, cfg.seed)

    meta = ModelMeta(
        model=net.cfg,
        tokenizer=tokenizer.config,
        vocab=tokenizer.vocab,
        labels=labels,
        oos_label=OOS,
        threshold=round(threshold, 4),
        temperature=round(temperature, 5),
        coverage_threshold=round(coverage_threshold, 4),
        detector=detector,
        **_entity_fields(data, kinds, labels, nlu or NluData(), summary),
        data={
            "checksum": checksum(data),
            "examples": len(train_ex) + len(valid_ex),
            "train_examples": len(train_ex) + len(valid_ex) if refit else len(train_ex),
            "valid_examples": len(valid_ex),
            "intents": summary.per_intent,
        },
        metrics=metrics,
        training={
            "options": asdict(cfg),
            "epochs_run": len(history),
            "refit_on_all_examples": refit,
            **pretrained,
            "seconds": round(time.monotonic() - started, 2),
            "torch": torch.__version__,
        },
    )
    # After a refit no row is held out from the model any more: none is passed on as such
    # (the store would judge later versions against this one on rows it trained on).
    return TrainResult(net, meta, tokenizer, summary, [] if refit else list(valid_ex), history)


def _calibrate(
    net: IntentNet,
    tokenizer: Tokenizer,
    train_ex: Sequence[Example],
    valid_ex: Sequence[Example],
    labels: list[str],
    cfg: TrainConfig,
) -> tuple[float, float, float, DetectorParams | None, dict[str, Any]]:
    """Temperature, the out-of-scope thresholds, the detector and the validation metrics they give."""
    label_index = {lab: i for i, lab in enumerate(labels)}
    oos_index = label_index.get(OOS)
    in_scope = torch.tensor([lab != OOS for lab in labels])
    x_valid = [tokenizer.encode(e.text) for e in valid_ex]
    y_valid = torch.tensor([label_index[e.intent] for e in valid_ex], dtype=torch.long)
    logits, features = _classify(net, x_valid)
    temperature = fit_temperature(logits, y_valid)
    probs = torch.softmax(logits / temperature, dim=-1)
    threshold = choose_threshold(probs, y_valid, in_scope, oos_index, cfg.max_oos_drop)
    shares, coverage_threshold = None, 0.0
    if cfg.word_coverage:
        tokens = [tokenize(e.text, tokenizer.config) for e in valid_ex]
        shares = known_shares(WordCoverage(tokenizer.vocab), tokens)
        coverage_threshold = choose_coverage_threshold(
            probs, shares, y_valid, in_scope, oos_index, threshold, cfg.max_oos_drop
        )
    detector, near = None, None
    if cfg.unknown_detector and bool(in_scope[y_valid].any()):
        _keep_rows(net, tokenizer, train_ex, label_index, cfg.seed)
        assert net.detector is not None
        top = logits.masked_fill(~in_scope, -math.inf).argmax(dim=-1)
        near = net.detector.similarity(features, top)
        top_prob = probs.gather(1, top[:, None])[:, 0]
        share = cfg.reject_known if oos_index is None else 0.0
        detector = fit_detector(top_prob, near, y_valid, top, in_scope, share, cfg.max_oos_drop)
    metrics = _validation_metrics(
        probs, y_valid, labels, in_scope, oos_index, threshold, shares, coverage_threshold, near, detector
    )
    return temperature, threshold, coverage_threshold, detector, metrics


def _classify(net: IntentNet, encoded: Sequence[Encoded], batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """Logits and pooled features of encoded utterances, in evaluation mode."""
    net.eval()
    logits, features = [], []
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            lo, fe = net.classify(Batch.from_encoded(encoded[i : i + batch_size]))
            logits.append(lo)
            features.append(fe)
    if not logits:
        return torch.empty(0, net.cfg.num_labels), torch.empty(0, net.encoder.out_dim)
    return torch.cat(logits), torch.cat(features)


def _keep_rows(
    net: IntentNet, tokenizer: Tokenizer, examples: Sequence[Example], label_index: dict[str, int], seed: int
) -> None:
    """Give the network's detector the features of each intent's rows (a seeded sample of big ones)."""
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        if ex.intent != OOS:
            by_intent[ex.intent].append(ex)
    rng = random.Random(seed)
    kept = []
    for intent in sorted(by_intent):
        group = by_intent[intent]
        cap = MAX_DETECTOR_ROWS_PER_INTENT
        kept += group if len(group) <= cap else rng.sample(group, cap)
    _, features = _classify(net, [tokenizer.encode(e.text) for e in kept])
    net.attach_detector(features, torch.tensor([label_index[e.intent] for e in kept], dtype=torch.long))


def _fit(
    train_ex: Sequence[Example],
    valid_ex: Sequence[Example],
    label_index: dict[str, int],
    kinds: list[Kind],
    cfg: TrainConfig,
    progress: Callable[[Progress], None] | None,
    show_progress: bool,
) -> tuple[IntentNet, Tokenizer, list[dict[str, Any]], dict[str, Any]]:
    """Vocabulary, network and epochs on `train_ex`; `valid_ex` (may be empty) is only watched.

    Also returns what the vectors and the teacher were, for `model.json`.
    """
    tokenizer_cfg = cfg.tokenizer_config()
    tokens = [tokenize(e.text, tokenizer_cfg) for e in train_ex]
    tokenizer = Tokenizer.build((e.text for e in train_ex), tokenizer_cfg, bag_buckets=cfg.bag_buckets)
    learned = len(tokenizer)
    sizes = Counter(e.intent for e in train_ex if e.intent != OOS)
    median = float(np.median(list(sizes.values()))) if sizes else 0.0
    vectors, teacher, facts = _pretrained(cfg, tokenizer.vocab, tokens, median)
    if vectors is not None:
        tokenizer = Tokenizer(tokenizer.vocab + vectors.extra_words, tokenizer_cfg, cfg.bag_buckets)
    dim = 0 if vectors is None else int(vectors.matrix.shape[1])
    model_cfg = cfg.model_config(len(tokenizer), len(label_index), dim, learned if dim else 0, len(kinds))
    # Fail now, not after an hour of training, if the result could never be loaded.
    check_bounds(model_cfg, tokenizer_cfg)
    net = IntentNet(model_cfg, sparse=True)
    if vectors is not None and net.embed.vectors is not None:
        net.embed.vectors.data.copy_(torch.from_numpy(vectors.matrix))

    x_train = [tokenizer.encode_tokens(t) for t in tokens]
    y_train = torch.tensor([label_index[e.intent] for e in train_ex])
    tags = _entity_tags(train_ex, tokens, kinds, tokenizer_cfg) if kinds else []
    x_valid = [tokenizer.encode(e.text) for e in valid_ex]
    y_valid = torch.tensor([label_index[e.intent] for e in valid_ex], dtype=torch.long)
    soft: Tensor | None = None
    if teacher:
        aug, soft, facts["teacher"] = _distillation(
            cfg, teacher, train_ex, tokens, y_train, len(label_index), vectors, tokenizer.vocab
        )
        x_train += [tokenizer.encode_tokens(t) for t in aug]
    labelled = len(y_train)

    sparse_params = [p for m in net.modules() if getattr(m, "sparse", False) for p in m.parameters()]
    sparse_ids = {id(p) for p in sparse_params}
    dense_params = [p for p in net.parameters() if id(p) not in sparse_ids and p.requires_grad]
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(dense_params, lr=cfg.lr, weight_decay=cfg.weight_decay),
        torch.optim.SparseAdam(sparse_params, lr=cfg.lr),
    ]
    pool = balanced_indices(y_train.tolist(), cfg.balance)
    pool = np.concatenate([pool, np.arange(labelled, len(x_train))])
    steps_per_epoch = math.ceil(len(pool) / cfg.batch_size)
    # Small data sets get more epochs, so that every model sees enough updates.
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    total_steps = steps_per_epoch * epochs
    warmup = min(steps_per_epoch, total_steps // 10 + 1)

    def schedule(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup)
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))

    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers]
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    best_state: dict[str, Tensor] | None = None
    best_key = (-1.0, -math.inf)
    stale = 0
    history: list[dict[str, Any]] = []
    bar = tqdm(total=epochs, desc="training", unit="epoch", disable=not show_progress, leave=True)
    for epoch in range(1, epochs + 1):
        net.train()
        total, count = 0.0, 0
        for idx in _batches(pool, cfg.batch_size, rng):
            batch = _word_dropout(Batch.from_encoded([x_train[i] for i in idx]), cfg.word_dropout, gen)
            deep, wide, tag_logits = net.paths_and_tags(batch)
            hard = idx < labelled
            target = y_train[idx[hard]]
            loss = _label_loss(loss_fn, deep[hard], None if wide is None else wide[hard], target, cfg)
            if tag_logits is not None:
                loss = loss + _tag_loss(net, tag_logits, batch.lengths, hard, [tags[i] for i in idx[hard]])
            if soft is not None:
                # Each path learns the teacher on its own, as each learns the labels.
                targets = soft[idx]
                distilled = _soft_loss(deep, targets)
                if wide is not None:
                    distilled = distilled + _soft_loss(wide, targets)
                loss = loss + cfg.distill_weight * distilled
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dense_params, cfg.clip_norm)
            for o, sch in zip(optimizers, schedulers, strict=True):
                o.step()
                sch.step()
            total += loss.item() * len(idx)
            count += len(idx)
        train_loss = total / max(count, 1)
        valid_acc = None
        if x_valid:
            logits, _ = _classify(net, x_valid)
            valid_acc = float((logits.argmax(-1) == y_valid).float().mean())
            valid_loss = float(torch.nn.functional.cross_entropy(logits, y_valid))
            key = (valid_acc, -valid_loss)
            if key > best_key:
                best_key, stale = key, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
        history.append({"epoch": epoch, "loss": round(train_loss, 5), "valid_accuracy": valid_acc})
        bar.set_postfix(loss=f"{train_loss:.3f}", valid_acc="-" if valid_acc is None else f"{valid_acc:.3f}")
        bar.update(1)
        if progress:
            progress(Progress(epoch, epochs, train_loss, valid_acc))
        if x_valid and cfg.patience and stale >= cfg.patience:
            break
    bar.close()
    if best_state is not None and not cfg.keep_last:
        net.load_state_dict(best_state)
    net.eval()
    return net, tokenizer, history, facts


def _label_loss(
    loss_fn: torch.nn.Module, deep: Tensor, wide: Tensor | None, target: Tensor, cfg: TrainConfig
) -> Tensor:
    if len(target) == 0:
        return deep.sum() * 0.0
    if wide is None:
        return loss_fn(deep, target)
    if cfg.separate_paths:
        return loss_fn(deep, target) + loss_fn(wide, target)
    return loss_fn(deep + wide, target)


def _entity_fields(
    examples: Sequence[Example], kinds: list[Kind], labels: list[str], nlu: NluData, summary: DataSummary
) -> dict[str, Any]:
    """The artifact's entity types and roles, synonyms, patterns and retrieval responses.

    As Rasa's extractor, only regexes and lookup tables named after an annotated entity type
    extract; the others, like responses of no retrieval intent, are counted as set aside.
    """
    synonyms = dict(nlu.synonyms)
    for ex in examples:  # a span given a value of its own, `[NYC](city:New York)`
        for e in ex.entities:
            span = ex.text[e.start : e.end]
            if e.value != span:
                synonyms.setdefault(span.casefold(), e.value)
    names = {k[0] for k in kinds}
    unused = sorted((set(nlu.regexes) | set(nlu.lookups)) - names)
    if unused:
        summary.set_aside.append(
            f"regexes and lookup tables named after no annotated entity: {', '.join(unused)}"
        )
    wanted = {f"utter_{label}" for label in labels if "/" in label}
    responses = {k: v for k, v in sorted(nlu.responses.items()) if k in wanted}
    return {
        "entity_types": [k[0] for k in kinds],
        "entity_roles": [[k[1], k[2]] for k in kinds] if any(k[1] or k[2] for k in kinds) else [],
        "entity_synonyms": dict(sorted(synonyms.items())),
        "entity_regexes": {k: v for k, v in sorted(nlu.regexes.items()) if k in names},
        "entity_lookups": {k: v for k, v in sorted(nlu.lookups.items()) if k in names},
        "responses": responses,
    }


def _entity_tags(
    examples: Sequence[Example], tokens: Sequence[Sequence[str]], kinds: list[Kind], cfg: TokenizerConfig
) -> list[list[int]]:
    """Each example's BIO tag ids, one a token of `tokens` (an utterance of no token reads as one)."""
    index = {k: i for i, k in enumerate(kinds)}
    out = []
    for e, toks in zip(examples, tokens, strict=True):
        tags = tags_of(token_spans(e.text, cfg), e.entities, index)
        # Normalising characters one by one can split a rare text differently: pad with "O".
        size = max(1, len(toks))
        out.append((tags + [0] * size)[:size])
    return out


def _tag_loss(
    net: IntentNet, logits: Tensor, lengths: Tensor, hard: np.ndarray, tags: Sequence[Sequence[int]]
) -> Tensor:
    """The CRF's loss on the labelled rows; `logits` [N, tags] covers every token of the batch."""
    if not tags:
        return logits.sum() * 0.0
    rows = torch.from_numpy(hard).repeat_interleave(lengths)
    sizes = lengths[torch.from_numpy(hard)].tolist()
    emissions = pad_sequence(list(logits[rows].split(sizes)), batch_first=True)
    target = pad_sequence([torch.tensor(row) for row in tags], batch_first=True)
    mask = pad_sequence([torch.ones(n, dtype=torch.bool) for n in sizes], batch_first=True)
    return crf_loss(emissions, target, mask, *net.crf_scores())


def _soft_loss(logits: Tensor, probs: Tensor) -> Tensor:
    """Cross-entropy against the teacher's probabilities (KL divergence up to a constant)."""
    return -(probs * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def _pretrained(
    cfg: TrainConfig, vocab: list[str], tokens: Sequence[Sequence[str]], median_examples: float
) -> tuple[VocabularyVectors | None, str, dict[str, Any]]:
    """The vectors' rows for the vocabulary and the teacher's source ("" for none), "auto" settled.

    "auto" means the default encoder where the pretrained extras are installed, the
    encoder knows enough of the training words, and (for the teacher) the data is
    small enough (`teacher_below`). The facts, reasons included, go to `model.json`.
    """
    wanted = {"vectors": cfg.vectors, "teacher": cfg.teacher}
    facts: dict[str, Any] = {}
    for name, source in wanted.items():
        if source == "auto" and not packages_installed():
            facts[name] = {"source": None, "reason": "pretrained extras not installed"}
        elif name == "teacher" and source == "auto" and median_examples >= cfg.teacher_below:
            facts[name] = {"source": None, "reason": f"{median_examples:g} examples per intent (median)"}
        elif not source or source == "none":
            facts[name] = {"source": None, "reason": "turned off"}
        else:
            wanted[name] = DEFAULT_ENCODER if source == "auto" else source
            continue
        wanted[name] = ""
    vectors = None
    if wanted["vectors"] or wanted["teacher"]:
        counts: Counter[str] = Counter(t for ts in tokens for t in ts)
        found = for_vocabulary(wanted["vectors"] or wanted["teacher"], vocab, counts, cfg.vectors_words)
        too_few = found.coverage < cfg.min_vectors_coverage
        reason = f"the source knows {found.coverage:.0%} of the training words"
        if wanted["vectors"]:
            vectors = None if too_few else found
            facts["vectors"] = found.facts() | ({"source": None, "reason": reason} if too_few else {})
        if too_few and cfg.teacher == "auto":
            facts["teacher"] = {"source": None, "reason": reason}
            wanted["teacher"] = ""
    return vectors, wanted["teacher"], facts


def _distillation(
    cfg: TrainConfig,
    source: str,
    train_ex: Sequence[Example],
    tokens: Sequence[Sequence[str]],
    labels: Tensor,
    num_labels: int,
    vectors: VocabularyVectors | None,
    vocab: list[str],
) -> tuple[list[list[str]], Tensor, dict[str, Any]]:
    """Augmented token lists, the teacher's probabilities for every row, and the teacher's facts."""
    encoder = load_encoder(source)
    teacher = fit_teacher(encoder, [e.text for e in train_ex], labels.tolist(), num_labels, cfg.teacher_c)
    near = (
        {}
        if vectors is None
        else neighbours(vocab, vectors.matrix, among=len(vocab) - len(vectors.extra_words))
    )
    copies = min(cfg.augment_copies, cfg.augment_budget // max(1, len(train_ex)))
    aug = augmented_rows(tokens, near, copies, cfg.seed)
    texts = [e.text for e in train_ex] + [teacher_text(t, encoder.mask_token) for t in aug]
    probs = torch.from_numpy(teacher.probabilities(texts))
    facts = {"source": encoder.source, "checksum": encoder.checksum, "augmented": len(aug)}
    return aug, probs, facts


def _validation_metrics(
    probs: Tensor,
    targets: Tensor,
    labels: list[str],
    in_scope: Tensor,
    oos_index: int | None,
    threshold: float,
    shares: Tensor | None,
    coverage_threshold: float,
    near: Tensor | None = None,
    detector: DetectorParams | None = None,
) -> dict[str, Any]:
    top, _, rejected = verdicts(
        probs, in_scope, oos_index, threshold, shares, coverage_threshold, near, detector
    )
    y_pred = [OOS if out else labels[t] for t, out in zip(top.tolist(), rejected.tolist(), strict=True)]
    y_true = [labels[t] for t in targets.tolist()]
    out = {k: round(v, 5) if isinstance(v, float) else v for k, v in metric_summary(y_true, y_pred).items()}
    out["accuracy_without_threshold"] = round(float((probs.argmax(-1) == targets).float().mean()), 5)
    out["oos_in_training"] = oos_index is not None
    if near is not None and detector is not None:
        known_rows = in_scope[targets]
        top_prob = probs.masked_fill(~in_scope, -1.0).max(dim=-1).values
        by_detector = detector.score(top_prob, near) < detector.threshold
        out["detector_rejected"] = round(float(by_detector[known_rows].float().mean()), 5)
    return out
