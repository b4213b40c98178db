"""The training loop, top to bottom: split, vocabulary, network, epochs, calibration, artifact.

Functions follow the order `train()` calls them in.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from model.artifact import ModelMeta, check_bounds
from model.config import TokenizerConfig
from model.coverage import WordCoverage
from model.detector import DetectorParams
from model.entities import Kind, kind_of, tags_of
from model.predictor import known_shares
from model.tokenizer import UNK_ID, Encoded, Tokenizer, token_spans, tokenize
from training.calibration import (
    choose_coverage_threshold,
    choose_threshold,
    fit_detector,
    fit_temperature,
    verdicts,
)
from training.config import TrainConfig
from training.corpus import read_corpus
from training.distill import augmented_rows, fit_teacher, neighbours, teacher_text
from training.encoder import SHIPPED, PretrainedEncoder, load_pretrained_encoder, start_from
from training.metrics import summary as metric_summary
from training.network import Batch, IntentNet, crf_loss, run_network
from training.pretrained import DEFAULT_ENCODER, load_encoder, packages_installed
from training.readers import OOS, DataSummary, Example, NluData, checksum, clean
from training.vectors import VocabularyVectors, for_vocabulary

__all__ = ["Progress", "TrainConfig", "TrainResult", "stratified_split", "train"]

# Enough rows to find an intent's near neighbours; bounds the model's size on big data sets.
MAX_DETECTOR_ROWS_PER_INTENT = 300


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


def train(
    examples: Sequence[Example],
    config: TrainConfig | None = None,
    valid_examples: Sequence[Example] | None = None,
    progress: Callable[[Progress], None] | None = None,
    show_progress: bool = False,
    nlu: NluData | None = None,
    unlabelled: Sequence[str] = (),
) -> TrainResult:
    """`nlu`: the synonyms, regexes, lookup tables and responses the data files held beside
    `examples` (training/readers.py `read_data`); they go into the artifact. `unlabelled`: real
    messages with no label (a review inbox's), which join the `transfer` file's: where the teacher
    distils, it labels a sample of them for the student."""
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

    fitted = _fit(train_ex, valid_ex, label_index, kinds, cfg, progress, show_progress, unlabelled)
    calibration = _calibrate(fitted.net, fitted.tokenizer, train_ex, valid_ex, labels, cfg)

    refit = _should_refit(cfg, summary, fitted, bool(valid_ex), valid_examples is None)
    if refit:
        # The validation rows go back in. Metrics, temperature and thresholds stay those of
        # the first model: the second has no rows left to measure itself on.
        seed_everything(cfg.seed)
        history = fitted.history
        fitted = _fit(train_ex + valid_ex, [], label_index, kinds, cfg, progress, show_progress, unlabelled)
        fitted.history = history + [{**h, "refit": True} for h in fitted.history]
        if calibration.detector is not None:
            _keep_rows(fitted.net, fitted.tokenizer, train_ex + valid_ex, label_index, cfg.seed)

    meta = ModelMeta(
        model=fitted.net.cfg,
        tokenizer=fitted.tokenizer.config,
        vocab=fitted.tokenizer.vocab,
        labels=labels,
        oos_label=OOS,
        threshold=round(calibration.threshold, 4),
        temperature=round(calibration.temperature, 5),
        coverage_threshold=round(calibration.coverage_threshold, 4),
        detector=calibration.detector,
        **_entity_fields(data, kinds, labels, nlu or NluData(), summary),
        data={
            "checksum": checksum(data),
            "examples": len(train_ex) + len(valid_ex),
            "train_examples": len(train_ex) + len(valid_ex) if refit else len(train_ex),
            "valid_examples": len(valid_ex),
            "intents": summary.per_intent,
        },
        metrics=calibration.metrics,
        training={
            "options": cfg.model_dump(),
            "epochs_run": len(fitted.history),
            "refit_on_all_examples": refit,
            **fitted.pretrained,
            "seconds": round(time.monotonic() - started, 2),
            "torch": torch.__version__,
        },
    )
    # After a refit no row is held out from the model any more: none is passed on as such
    # (the store would judge later versions against this one on rows it trained on).
    valid_out = [] if refit else list(valid_ex)
    return TrainResult(fitted.net, meta, fitted.tokenizer, summary, valid_out, fitted.history)


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


@dataclass
class _Fitted:
    net: IntentNet
    tokenizer: Tokenizer
    history: list[dict[str, Any]]
    pretrained: dict[str, Any]  # what the vectors and the teacher were, for model.json


@dataclass
class _Rows:
    """The training rows, encoded: the labelled ones first, then any augmented ones."""

    encoded: list[Encoded]
    labels: Tensor  # of the labelled rows
    tags: list[list[int]]  # BIO tag ids of the labelled rows (with entities)
    soft: Tensor | None  # the teacher's probabilities for every row (with a teacher)


def _fit(
    train_ex: Sequence[Example],
    valid_ex: Sequence[Example],
    label_index: dict[str, int],
    kinds: list[Kind],
    cfg: TrainConfig,
    progress: Callable[[Progress], None] | None,
    show_progress: bool,
    unlabelled: Sequence[str] = (),
) -> _Fitted:
    """Vocabulary, network and epochs on `train_ex`; `valid_ex` (may be empty) is only watched."""
    net, tokenizer, rows, pretrained = _build(train_ex, label_index, kinds, cfg, unlabelled)
    x_valid = [tokenizer.encode(e.text) for e in valid_ex]
    y_valid = torch.tensor([label_index[e.intent] for e in valid_ex], dtype=torch.long)
    slow = net.encoder_parameters() if pretrained["encoder"].get("source") and cfg.encoder_lr != 1 else []
    history = _epochs(net, rows, x_valid, y_valid, cfg, progress, show_progress, slow)
    return _Fitted(net, tokenizer, history, pretrained)


def _build(
    train_ex: Sequence[Example],
    label_index: dict[str, int],
    kinds: list[Kind],
    cfg: TrainConfig,
    unlabelled: Sequence[str] = (),
) -> tuple[IntentNet, Tokenizer, _Rows, dict[str, Any]]:
    """The vocabulary (with the pretrained source's frequent words), the network, its training rows."""
    tokenizer_cfg = cfg.tokenizer_config()
    tokens = [tokenize(e.text, tokenizer_cfg) for e in train_ex]
    tokenizer = Tokenizer.build((e.text for e in train_ex), tokenizer_cfg, bag_buckets=cfg.bag_buckets)
    learned = len(tokenizer)
    sizes = Counter(e.intent for e in train_ex if e.intent != OOS)
    median = float(np.median(list(sizes.values()))) if sizes else 0.0
    vectors, teacher, pretrained = _pretrained(cfg, tokenizer.vocab, tokens, median)
    encoder = _encoder(cfg, len(label_index), pretrained)
    if encoder is not None:
        # The encoder's word table replaces the frozen vectors: its words join the vocabulary.
        extra = [w for w in encoder.words if w not in tokenizer.index]
        tokenizer = Tokenizer(tokenizer.vocab + extra, tokenizer_cfg, cfg.bag_buckets)
    elif vectors is not None:
        tokenizer = Tokenizer(tokenizer.vocab + vectors.extra_words, tokenizer_cfg, cfg.bag_buckets)
    dim = 0 if vectors is None or encoder is not None else int(vectors.matrix.shape[1])
    model_cfg = cfg.network_config(len(tokenizer), len(label_index), dim, learned if dim else 0, len(kinds))
    # Fail now, not after an hour of training, if the result could never be loaded.
    check_bounds(model_cfg, tokenizer_cfg)
    net = IntentNet(model_cfg, sparse=True)
    near_matrix = None
    if encoder is not None:
        own = (
            None
            if vectors is None
            else np.pad(vectors.matrix[:learned], ((0, len(tokenizer) - learned), (0, 0)))
        )
        start_from(net, tokenizer.vocab, encoder, own)
        known = sum(w in encoder.index for w in tokenizer.vocab[2:learned])
        pretrained["encoder"]["known_training_words"] = round(known / max(1, learned - 2), 4)
        near_matrix = net.embed.words.weight.detach().numpy()
    elif vectors is not None and net.embed.vectors is not None:
        net.embed.vectors.data.copy_(torch.from_numpy(vectors.matrix))
        near_matrix = vectors.matrix

    labels = torch.tensor([label_index[e.intent] for e in train_ex])
    rows = _Rows(
        encoded=[tokenizer.encode_tokens(t) for t in tokens],
        labels=labels,
        tags=_entity_tags(train_ex, tokens, kinds, tokenizer_cfg) if kinds else [],
        soft=None,
    )
    if teacher:
        augmented, rows.soft, pretrained["teacher"] = _distillation(
            cfg,
            teacher,
            train_ex,
            tokens,
            labels,
            len(label_index),
            near_matrix,
            learned,
            tokenizer.vocab,
            unlabelled,
        )
        rows.encoded += [tokenizer.encode_tokens(t) for t in augmented]
    return net, tokenizer, rows, pretrained


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
    word_matrix: np.ndarray | None,
    learned: int,
    vocab: list[str],
    unlabelled: Sequence[str] = (),
) -> tuple[list[list[str]], Tensor, dict[str, Any]]:
    """Augmented token lists (and real sentences of a transfer corpus), the teacher's probabilities
    for every row, and the teacher's facts."""
    encoder = load_encoder(source)
    teacher = fit_teacher(encoder, [e.text for e in train_ex], labels.tolist(), num_labels, cfg.teacher_c)
    near = {} if word_matrix is None else neighbours(vocab, word_matrix, among=learned)
    copies = min(cfg.augment_copies, cfg.augment_budget // max(1, len(train_ex)))
    aug = augmented_rows(tokens, near, copies, cfg.seed)
    texts = [e.text for e in train_ex] + [teacher_text(t, encoder.mask_token) for t in aug]
    real = _transfer_texts(cfg, unlabelled)
    aug += [tokenize(t, cfg.tokenizer_config()) for t in real]
    probs = torch.from_numpy(teacher.probabilities(texts + real))
    facts = {"source": encoder.source, "checksum": encoder.checksum, "augmented": len(aug) - len(real)}
    if real:
        facts["transfer_sentences"] = len(real)
    return aug, probs, facts


def _transfer_texts(cfg: TrainConfig, unlabelled: Sequence[str] = ()) -> list[str]:
    """A seeded sample of `transfer_rows` messages from the transfer corpus and `unlabelled`."""
    texts = (read_corpus(cfg.transfer) if cfg.transfer else []) + list(unlabelled)
    if not texts or not cfg.transfer_rows:
        return []
    return random.Random(cfg.seed).sample(texts, min(cfg.transfer_rows, len(texts)))


def _encoder(cfg: TrainConfig, num_labels: int, facts: dict[str, Any]) -> PretrainedEncoder | None:
    """The pretrained encoder to start from, or None; what was chosen and why goes to `facts`."""
    if not cfg.encoder:
        facts["encoder"] = {"source": None, "reason": "turned off"}
        return None
    path = SHIPPED if cfg.encoder == "auto" else Path(cfg.encoder).expanduser()
    if cfg.encoder == "auto" and not path.is_file():
        facts["encoder"] = {"source": None, "reason": "no encoder shipped with this installation"}
        return None
    encoder = load_pretrained_encoder(path)
    differ = encoder.shape.mismatch(cfg.network_config(2, num_labels), cfg.tokenizer_config())
    if differ:
        if cfg.encoder != "auto":
            raise ValueError(f"the encoder {path} does not fit these options: {', '.join(differ)}")
        facts["encoder"] = {
            "source": None,
            "reason": f"options differ from the encoder's: {', '.join(differ)}",
        }
        return None
    facts["encoder"] = {
        "source": path.name if cfg.encoder == "auto" else str(path),
        "checksum": encoder.checksum,
    }
    return encoder


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


def _epochs(
    net: IntentNet,
    rows: _Rows,
    x_valid: Sequence[Encoded],
    y_valid: Tensor,
    cfg: TrainConfig,
    progress: Callable[[Progress], None] | None,
    show_progress: bool,
    pretrained: Sequence[torch.nn.Parameter] = (),
) -> list[dict[str, Any]]:
    """Balanced batches under a warm-up and cosine schedule; validation accuracy after each epoch.

    `pretrained`: the weights a pretrained encoder started, trained at `encoder_lr` times the rate."""
    optimizers, dense = net.configure_optimizers(cfg.lr, cfg.weight_decay, pretrained, cfg.encoder_lr)
    labelled = len(rows.labels)
    pool = balanced_indices(rows.labels.tolist(), cfg.balance)
    pool = np.concatenate([pool, np.arange(labelled, len(rows.encoded))])
    steps_per_epoch = math.ceil(len(pool) / cfg.batch_size)
    # Small data sets get more epochs, so that every model sees enough updates.
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    if cfg.max_steps and len(rows.encoded) > labelled:
        epochs = min(epochs, max(1, cfg.max_steps // steps_per_epoch))
    schedule = _warmup_cosine(steps_per_epoch, steps_per_epoch * epochs)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers]
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    best, stale = (-1.0, -math.inf), 0
    history: list[dict[str, Any]] = []
    bar = tqdm(total=epochs, desc="training", unit="epoch", disable=not show_progress, leave=True)
    for epoch in range(1, epochs + 1):
        net.train()
        total, count = 0.0, 0
        for idx in _batches(pool, cfg.batch_size, rng):
            loss = _batch_loss(net, rows, idx, loss_fn, cfg, gen)
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dense, cfg.clip_norm)
            for o, sch in zip(optimizers, schedulers, strict=True):
                o.step()
                sch.step()
            total += loss.item() * len(idx)
            count += len(idx)
        train_loss = total / max(count, 1)
        valid_acc = None
        if x_valid:
            logits = run_network(net, x_valid).logits
            valid_acc = float((logits.argmax(-1) == y_valid).float().mean())
            key = (valid_acc, -float(torch.nn.functional.cross_entropy(logits, y_valid)))
            best, stale = (key, 0) if key > best else (best, stale + 1)
        history.append({"epoch": epoch, "loss": round(train_loss, 5), "valid_accuracy": valid_acc})
        bar.set_postfix(loss=f"{train_loss:.3f}", valid_acc="-" if valid_acc is None else f"{valid_acc:.3f}")
        bar.update(1)
        if progress:
            progress(Progress(epoch, epochs, train_loss, valid_acc))
        if x_valid and cfg.patience and stale >= cfg.patience:
            break
    bar.close()
    net.eval()
    return history


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


def _warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The learning rate's factor: a linear warm-up (at most a tenth of the run), then cosine decay."""
    warmup = min(warmup_steps, total_steps // 10 + 1)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup)
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))

    return factor


def _batches(pool: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(pool)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _batch_loss(
    net: IntentNet,
    rows: _Rows,
    idx: np.ndarray,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    cfg: TrainConfig,
    generator: torch.Generator,
) -> Tensor:
    """The labels' loss (each path on its own), the tags' and the teacher's, on one batch."""
    batch = _word_dropout(Batch.from_encoded([rows.encoded[i] for i in idx]), cfg.word_dropout, generator)
    out = net(batch, tags=True)
    deep, wide, tag_logits = out.deep, out.wide, out.tags
    hard = idx < len(rows.labels)
    target = rows.labels[idx[hard]]
    loss = _label_loss(loss_fn, deep[hard], None if wide is None else wide[hard], target, cfg)
    if tag_logits is not None:
        loss = loss + _tag_loss(net, tag_logits, batch.lengths, hard, [rows.tags[i] for i in idx[hard]])
    if rows.soft is not None:
        # Each path learns the teacher on its own, as each learns the labels.
        targets = rows.soft[idx]
        distilled = _soft_loss(deep, targets)
        if wide is not None:
            distilled = distilled + _soft_loss(wide, targets)
        loss = loss + cfg.distill_weight * distilled
    return loss


def _word_dropout(batch: Batch, p: float, generator: torch.Generator) -> Batch:
    """Replace known words by <unk> (their n-grams stay): teaches the model to read unseen words."""
    if p <= 0:
        return batch
    drop = (torch.rand(batch.words.shape, generator=generator) < p) & (batch.words > UNK_ID)
    return replace(batch, words=batch.words.masked_fill(drop, UNK_ID))


def _label_loss(
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    deep: Tensor,
    wide: Tensor | None,
    target: Tensor,
    cfg: TrainConfig,
) -> Tensor:
    if len(target) == 0:
        return deep.sum() * 0.0
    if wide is None:
        return loss_fn(deep, target)
    if cfg.separate_paths:
        return loss_fn(deep, target) + loss_fn(wide, target)
    return loss_fn(deep + wide, target)


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


@dataclass
class _Calibration:
    temperature: float = 1.0
    threshold: float = 0.0
    coverage_threshold: float = 0.0
    detector: DetectorParams | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _calibrate(
    net: IntentNet,
    tokenizer: Tokenizer,
    train_ex: Sequence[Example],
    valid_ex: Sequence[Example],
    labels: list[str],
    cfg: TrainConfig,
) -> _Calibration:
    """Temperature, the out-of-scope thresholds, the detector and the validation metrics they give.

    Without validation rows: no temperature, no thresholds, no metrics.
    """
    if not valid_ex:
        return _Calibration()
    label_index = {lab: i for i, lab in enumerate(labels)}
    oos_index = label_index.get(OOS)
    in_scope = torch.tensor([lab != OOS for lab in labels])
    y_valid = torch.tensor([label_index[e.intent] for e in valid_ex], dtype=torch.long)
    if cfg.unknown_detector and bool(in_scope[y_valid].any()):
        _keep_rows(net, tokenizer, train_ex, label_index, cfg.seed)
    scored = run_network(net, [tokenizer.encode(e.text) for e in valid_ex], in_scope)
    logits, near = scored.logits, scored.near
    temperature = fit_temperature(
        logits,
        y_valid,
        prior=cfg.temperature_prior,
        spread=cfg.temperature_spread,
        fit=cfg.temperature_fit,
        in_scope=in_scope,
    )
    probs = torch.softmax(logits / temperature, dim=-1)
    threshold = choose_threshold(probs, y_valid, in_scope, oos_index, cfg.max_oos_drop)
    shares, coverage_threshold = None, 0.0
    if cfg.word_coverage:
        tokens = [tokenize(e.text, tokenizer.config) for e in valid_ex]
        shares = torch.from_numpy(known_shares(WordCoverage(tokenizer.vocab), tokens))
        coverage_threshold = choose_coverage_threshold(
            probs, shares, y_valid, in_scope, oos_index, threshold, cfg.max_oos_drop
        )
    detector = None
    if near is not None:
        top = logits.masked_fill(~in_scope, -math.inf).argmax(dim=-1)
        top_prob = probs.gather(1, top[:, None])[:, 0]
        share = cfg.reject_known if oos_index is None else 0.0
        fitted = fit_detector(top_prob, near, y_valid, top, in_scope, share, cfg.max_oos_drop)
        # As model.json keeps it (six places), so the model answers the same before and after a save.
        detector = None if fitted is None else DetectorParams.from_dict(fitted.to_dict())
    metrics = _validation_metrics(
        probs, y_valid, labels, in_scope, oos_index, threshold, shares, coverage_threshold, near, detector
    )
    return _Calibration(temperature, threshold, coverage_threshold, detector, metrics)


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
    features = run_network(net, [tokenizer.encode(e.text) for e in kept], features=True).features
    assert features is not None
    net.attach_detector(features, torch.tensor([label_index[e.intent] for e in kept], dtype=torch.long))


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
        by_detector = detector.score(top_prob.numpy(), near.numpy()) < detector.threshold
        out["detector_rejected"] = round(float(by_detector[known_rows.numpy()].mean()), 5)
    return out


def _should_refit(
    cfg: TrainConfig, summary: DataSummary, fitted: _Fitted, has_valid: bool, split_here: bool
) -> bool:
    """Retrain on every row when intents have few examples, the split was made here and no teacher
    taught: with ten examples an intent, one is its whole validation share. After distillation the
    refit scored lower in both probes, for twice the time (docs/RESEARCH.md)."""
    sizes = [n for intent, n in summary.per_intent.items() if intent != OOS]
    distilled = bool((fitted.pretrained.get("teacher") or {}).get("source"))
    return split_here and has_valid and float(np.median(sizes)) < cfg.refit_below and not distilled


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
