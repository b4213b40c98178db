"""A pretrained recurrent encoder: the student's starting point, taught to read like its teacher.

Trained once on a corpus of ordinary messages (`intently encoder build`): the word
table, the character n-gram table and the recurrent layer learn to reproduce the
teacher's sentence embedding of each message from the pooled states (a cosine
regression, as Tokenlearn does for static vectors; Turc et al. 2019 for why a
pretrained student distils better). `intently train` then starts its network from
these weights instead of from random ones, so the student already reads sentences
it was never shown; the served model keeps its kind and size.

The file is a safetensors file: the tables in int8 with a scale a row, the rest in
float16, the word list and the shape in its metadata. It loads with numpy alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from model.config import ModelConfig, TokenizerConfig
from model.tokenizer import PAD, UNK, Encoded, Tokenizer, tokenize
from training.network import Batch, IntentNet

FORMAT = "intently-encoder"
FORMAT_VERSION = 1
# The encoder `encoder: auto` starts from: shipped with the training package (training/encoders/).
SHIPPED = Path(__file__).parent / "encoders" / "en-chat-v1.safetensors"
_MAX_WORDS = 1_000_000


class EncoderError(ValueError):
    """The file is not a usable pretrained encoder; the message says why."""


@dataclass(frozen=True)
class EncoderShape:
    """The network settings a student must share with the encoder to start from it."""

    arch: str = "lstm"
    embed_dim: int = 256
    hidden_dim: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "maxmean"
    ngram_min: int = 3
    ngram_max: int = 5
    ngram_buckets: int = 50_000
    lowercase: bool = True

    def mismatch(self, model: ModelConfig, tokenizer: TokenizerConfig) -> list[str]:
        """The settings in which `model`/`tokenizer` differ from this shape (empty: it fits)."""
        theirs = {**asdict(tokenizer), **asdict(model)}
        return [f"{k}={theirs[k]!r} (encoder: {v!r})" for k, v in asdict(self).items() if theirs.get(k) != v]


@dataclass
class PretrainedEncoder:
    """The weights a student starts from, as float32 arrays."""

    shape: EncoderShape
    words: list[str]  # without <pad> and <unk>
    word_table: np.ndarray  # [len(words), embed_dim]
    ngram_table: np.ndarray  # [ngram_buckets + 1, embed_dim]; row 0 unused
    rnn: dict[str, np.ndarray]  # torch's parameter names of the recurrent layer
    project: np.ndarray | None  # [embed_dim, vectors_dim]: a pretrained word vector into the table's space
    head: np.ndarray | None = None  # [teacher_dim, pooled features + 1]: the regression onto the teacher
    facts: dict[str, Any] = field(default_factory=dict)  # teacher, corpus, training: for provenance
    checksum: str = ""

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {}
        for name, table in (("words", self.word_table), ("ngrams", self.ngram_table)):
            q, scale = _quantize_rows(table)
            tensors[f"{name}.q"], tensors[f"{name}.scale"] = q, scale
        for name, value in self.rnn.items():
            tensors[f"rnn.{name}"] = value.astype(np.float16)
        for name, extra in (("project", self.project), ("head", self.head)):
            if extra is not None:
                tensors[name] = extra.astype(np.float16)
        meta = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "shape": json.dumps(asdict(self.shape)),
            "words": json.dumps(self.words, ensure_ascii=False),
            "facts": json.dumps(self.facts, ensure_ascii=False),
        }
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | Path) -> PretrainedEncoder:
        source = Path(path).expanduser()
        if not source.is_file():
            raise EncoderError(f"no pretrained encoder at {source}")
        try:
            with safe_open(str(source), framework="np") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise EncoderError(
                        f"{source} is not a pretrained encoder (built by `intently encoder build`)"
                    )
                if int(meta.get("format_version", "0")) > FORMAT_VERSION:
                    raise EncoderError(f"{source} is of a newer format; upgrade intently to use it")
                arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
            shape = EncoderShape(**json.loads(meta["shape"]))
            words = json.loads(meta["words"])
            facts = json.loads(meta.get("facts", "{}"))
        except EncoderError:
            raise
        except Exception as exc:  # safetensors and json raise several types for a damaged file
            raise EncoderError(f"{source} is not a readable pretrained encoder: {exc}") from None
        if (
            not isinstance(words, list)
            or len(words) > _MAX_WORDS
            or not all(isinstance(w, str) for w in words)
        ):
            raise EncoderError(f"{source}: the word list is damaged")
        tables = {n: _dequantize(arrays, n) for n in ("words", "ngrams")}
        if tables["words"].shape != (len(words), shape.embed_dim) or tables["ngrams"].shape != (
            shape.ngram_buckets + 1,
            shape.embed_dim,
        ):
            raise EncoderError(f"{source}: the tables do not match the encoder's shape")
        rnn = {k[4:]: v.astype(np.float32) for k, v in arrays.items() if k.startswith("rnn.")}
        project, head = (arrays[n].astype(np.float32) if n in arrays else None for n in ("project", "head"))
        return cls(
            shape, words, tables["words"], tables["ngrams"], rnn, project, head, facts, file_checksum(source)
        )


_LOADED: dict[tuple[str, int], PretrainedEncoder] = {}


def load_pretrained_encoder(path: str | Path) -> PretrainedEncoder:
    """`PretrainedEncoder.load`, once per file and process (a training run may ask twice)."""
    source = Path(path).expanduser().resolve()
    key = (str(source), source.stat().st_mtime_ns if source.is_file() else 0)
    if key not in _LOADED:
        _LOADED[key] = PretrainedEncoder.load(source)
    return _LOADED[key]


def _quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.abs(table).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float16)


def _dequantize(arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    q, scale = arrays.get(f"{name}.q"), arrays.get(f"{name}.scale")
    if q is None or scale is None or q.ndim != 2 or scale.shape != (len(q),):
        raise EncoderError(f"the {name} table is missing or damaged")
    return q.astype(np.float32) * scale.astype(np.float32)[:, None]


def file_checksum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# --- building one ---


def encoder_words(texts: Sequence[str], cfg: TokenizerConfig, extra: Sequence[str], size: int) -> list[str]:
    """The corpus's words seen at least twice, most frequent first, then `extra` (e.g. the vector
    source's own words), `size` in all."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tokenize(text, cfg))
    ranked = sorted((w for w, c in counts.items() if c >= 2), key=lambda w: (-counts[w], w))
    words = list(dict.fromkeys([*ranked[: size * 3 // 4], *extra, *ranked]))
    return [w for w in words if w not in (PAD, UNK)][:size]


@dataclass
class BuildSettings:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    word_dropout: float = 0.1
    seed: int = 0


def build(
    texts: Sequence[str],
    targets: np.ndarray,
    words: Sequence[str],
    vectors: np.ndarray | None,
    shape: EncoderShape,
    settings: BuildSettings,
    facts: dict[str, Any],
    progress: Callable[[str], None] | None = None,
    init: PretrainedEncoder | None = None,
) -> PretrainedEncoder:
    """Train the encoder to map each text to its teacher embedding (`targets`, unit rows).

    `vectors`: a frozen pretrained row per word of `words` (the teacher's static word
    vectors), or None to learn the word table from scratch. `init`: an encoder to go on
    training (its words, shape and weights are kept; `words` and `vectors` are not used).
    """
    if len(texts) != len(targets):
        raise ValueError("one target embedding per text")
    if init is not None:
        if init.head is None or init.head.shape[0] != targets.shape[1]:
            raise EncoderError(
                "the encoder to go on from was built for another teacher (or before heads were kept)"
            )
        words, vectors, shape = init.words, None, init.shape
    tok_cfg = TokenizerConfig(
        lowercase=shape.lowercase,
        ngram_min=shape.ngram_min,
        ngram_max=shape.ngram_max,
        ngram_buckets=shape.ngram_buckets,
    )
    tokenizer = Tokenizer([PAD, UNK, *words], tok_cfg)
    vocab = len(tokenizer)
    cfg = ModelConfig(
        vocab_size=vocab,
        num_labels=int(targets.shape[1]),
        arch=shape.arch,  # type: ignore[arg-type]
        embed_dim=shape.embed_dim,
        hidden_dim=shape.hidden_dim,
        num_layers=shape.num_layers,
        bidirectional=shape.bidirectional,
        pooling=shape.pooling,  # type: ignore[arg-type]
        dropout=0.1,
        ngram_buckets=shape.ngram_buckets,
        vectors_dim=0 if vectors is None else int(vectors.shape[1]),
        learned_vocab=vocab if vectors is not None else 0,
    )
    torch.manual_seed(settings.seed)
    net = IntentNet(cfg, sparse=True)
    if vectors is not None and net.embed.vectors is not None:
        rows = np.zeros((vocab, vectors.shape[1]), dtype=np.float32)
        rows[2:] = vectors
        net.embed.vectors.data.copy_(torch.from_numpy(rows))
        torch.nn.init.zeros_(net.embed.words.weight)  # the projection carries the word at first
    if init is not None and init.head is not None:
        start_from(net, tokenizer.vocab, init)
        with torch.no_grad():
            net.head.weight.copy_(torch.from_numpy(init.head[:, :-1]))
            net.head.bias.copy_(torch.from_numpy(init.head[:, -1]))
        facts = {
            **facts,
            "continued_from": {"checksum": init.checksum, "sentences": init.facts.get("sentences")},
        }
    encoded = [tokenizer.encode(t) for t in texts]
    target = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    # A held-out share, to report how well the encoder reads messages it was not trained on.
    order = list(range(len(encoded)))
    random.Random(settings.seed).shuffle(order)
    held_out, order = order[: min(2000, len(order) // 50)], order[min(2000, len(order) // 50) :]
    optimizers, dense = net.configure_optimizers(settings.lr, 0.0)
    total = math.ceil(len(order) / settings.batch_size) * settings.epochs
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, _warmup_cosine(total)) for o in optimizers]
    rng = random.Random(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    started = time.monotonic()
    step, running, scores = 0, 0.0, []
    for epoch in range(1, settings.epochs + 1):
        net.train()
        rng.shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            batch = _word_dropout(Batch.from_encoded([encoded[i] for i in idx]), settings.word_dropout, gen)
            loss = 1.0 - _cosine(net, batch, target[idx])
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(dense, 1.0)
            for o, sch in zip(optimizers, schedulers, strict=True):
                o.step()
                sch.step()
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            step += 1
            if progress and step % 200 == 0:
                progress(
                    f"epoch {epoch}/{settings.epochs} step {step}/{total} training cosine {1 - running:.4f}"
                    f" {time.monotonic() - started:.0f}s"
                )
        scores.append(round(_held_out_cosine(net, [encoded[i] for i in held_out], target[held_out]), 4))
        if progress:
            progress(f"epoch {epoch}: held-out cosine {scores[-1]}")
    net.eval()
    net.embed.fold()
    table = net.embed.folded if net.embed.folded is not None else net.embed.words.weight
    ngrams = net.embed.ngrams
    assert ngrams is not None, "an encoder needs character n-grams"
    facts = {
        **facts,
        "sentences": len(texts),
        "held_out_sentences": len(held_out),
        "words": len(words),
        "settings": asdict(settings),
        "training_cosine": round(1 - running, 4),
        "held_out_cosine_by_epoch": scores,
        "seconds": round(time.monotonic() - started, 1),
        "torch": torch.__version__,
    }
    head = torch.cat([net.head.weight, net.head.bias[:, None]], dim=1)
    return PretrainedEncoder(
        shape,
        list(words),
        table.detach()[2:].numpy().copy(),
        ngrams.weight.detach().numpy().copy(),
        {k: v.detach().numpy().copy() for k, v in net.encoder.rnn.state_dict().items()},
        init.project
        if init is not None
        else None
        if net.embed.project is None
        else _numpy(net.embed.project.weight),
        head.detach().numpy().copy(),
        facts,
    )


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().copy()


def _warmup_cosine(total: int) -> Callable[[int], float]:
    warmup = min(200, total // 10 + 1)
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, total))))


def _word_dropout(batch: Batch, p: float, generator: torch.Generator) -> Batch:
    if p > 0:
        drop = (torch.rand(batch.words.shape, generator=generator) < p) & (batch.words > 1)
        batch.words = batch.words.masked_fill(drop, 1)
    return batch


def _cosine(net: IntentNet, batch: Batch, target: torch.Tensor) -> torch.Tensor:
    """The mean cosine of the encoder's reading of `batch` with the teacher's embeddings."""
    return torch.nn.functional.cosine_similarity(net(batch).deep, target, dim=-1).mean()


def _held_out_cosine(net: IntentNet, encoded: Sequence[Encoded], target: torch.Tensor) -> float:
    if not encoded:
        return float("nan")
    net.eval()
    with torch.no_grad():
        parts = [
            _cosine(net, Batch.from_encoded(encoded[i : i + 512]), target[i : i + 512]).item()
            * len(encoded[i : i + 512])
            for i in range(0, len(encoded), 512)
        ]
    net.train()
    return sum(parts) / len(encoded)


# --- starting a student from one ---


def start_from(
    net: IntentNet, vocab: Sequence[str], encoder: PretrainedEncoder, vectors: np.ndarray | None = None
) -> int:
    """Copy the encoder's weights into a fresh student `net` whose vocabulary is `vocab`.

    A word the encoder lacks gets its pretrained vector projected (`vectors`, one row per
    word of `vocab`, zero where unknown) or stays at zero: its n-grams still carry it.
    Returns how many of `vocab`'s words the encoder knew.
    """
    weight = net.embed.words.weight
    known = 0
    with torch.no_grad():
        rows = np.zeros((len(vocab), encoder.shape.embed_dim), dtype=np.float32)
        for i, word in enumerate(vocab):
            j = encoder.index.get(word)
            if j is not None:
                rows[i] = encoder.word_table[j]
                known += 1
            elif vectors is not None and encoder.project is not None and i >= 2 and vectors[i].any():
                rows[i] = encoder.project @ vectors[i]
        weight[: len(vocab)] = torch.from_numpy(rows)
        if net.embed.ngrams is not None:
            net.embed.ngrams.weight.copy_(torch.from_numpy(encoder.ngram_table))
        net.encoder.rnn.load_state_dict({k: torch.from_numpy(v) for k, v in encoder.rnn.items()})
    return known
