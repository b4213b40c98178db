"""Pretrained word vectors for the network's vocabulary, and the table files that hold them.

A word's vector is the sentence encoder's embedding of the word on its own (the
static-embedding distillation of model2vec, done with the encoder that is already
installed). A table of the encoder's frequent words is built once per encoder and
kept on disk, so training reads it instead of running the encoder again;
`intently vectors build` writes the same file for a team to keep or share.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from model.tokenizer import PAD, UNK
from training.pretrained import SentenceEncoder, load_encoder

FORMAT = "intently-vectors"
_MAX_WORDS = 2_000_000


def cache_dir() -> Path:
    root = os.environ.get("INTENTLY_CACHE") or os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    base = Path(root).expanduser()
    return base / "vectors" if os.environ.get("INTENTLY_CACHE") else base / "intently" / "vectors"


@dataclass
class VectorTable:
    """Words and their vectors (float32 rows), with the encoder they came from."""

    words: list[str]
    matrix: np.ndarray
    source: str
    checksum: str

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or len(self.words) != len(self.matrix):
            raise ValueError("a vector table needs one row per word")
        self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        meta = {"format": FORMAT, "source": self.source, "checksum": self.checksum}
        meta["words"] = json.dumps(self.words, ensure_ascii=False)
        save_file({"vectors": self.matrix.astype(np.float16)}, str(tmp), metadata=meta)
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | Path) -> VectorTable:
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                matrix = f.get_tensor("vectors").astype(np.float32)
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise ValueError(f"{path} is not a vector table: {exc}") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a vector table (built by `intently vectors build`)")
        words = json.loads(meta["words"])
        if (
            not isinstance(words, list)
            or len(words) > _MAX_WORDS
            or not all(isinstance(w, str) for w in words)
        ):
            raise ValueError(f"{path}: the word list is damaged")
        return cls(words, matrix, meta.get("source", ""), meta.get("checksum", ""))


def build_table(encoder: SentenceEncoder, words: Sequence[str] | None = None) -> VectorTable:
    """Vectors of `words` (default: the encoder's own whole words, frequent first)."""
    words = list(dict.fromkeys(words if words is not None else encoder.vocabulary()))
    return VectorTable(words, encoder.encode(words, batch_size=512), encoder.source, encoder.checksum)


def encoder_table(encoder: SentenceEncoder) -> VectorTable:
    """The table of the encoder's own words, built once and then read from the cache."""
    path = cache_dir() / f"{encoder.checksum.removeprefix('sha256:')[:24]}.safetensors"
    if path.is_file():
        try:
            return VectorTable.load(path)
        except ValueError:
            pass  # a damaged cache is rebuilt
    table = build_table(encoder)
    with contextlib.suppress(OSError):  # a read-only home still trains, only slower next time
        table.save(path)
    return table


@dataclass
class VocabularyVectors:
    """What training needs: the frequent words to add, and rows for the whole vocabulary."""

    extra_words: list[str]
    matrix: np.ndarray  # [len(trained) + len(extra_words), dim]; zero for <pad>, <unk>
    source: str
    checksum: str
    coverage: float  # share of the training text's word tokens that the source knows

    def facts(self) -> dict[str, object]:
        return {
            "source": self.source,
            "checksum": self.checksum,
            "dim": int(self.matrix.shape[1]),
            "extra_words": len(self.extra_words),
            "coverage": round(self.coverage, 4),
        }


def for_vocabulary(
    source: str, trained: Sequence[str], counts: Counter[str], extra: int
) -> VocabularyVectors:
    """Rows for the trained vocabulary, then for up to `extra` frequent words of the source.

    `source` is a table file or a sentence encoder. An encoder embeds every trained word,
    the source's own vocabulary or not; a table leaves the words it lacks at zero.
    """
    path = Path(source).expanduser()
    encoder = None
    if path.is_file():
        table = VectorTable.load(path)
    else:
        encoder = load_encoder(source)
        table = encoder_table(encoder)
    trained = list(trained)
    known = set(trained)
    extra_words = [w for w in table.words if w not in known][:extra]
    vocab = trained + extra_words
    rows = np.zeros((len(vocab), table.dim), dtype=np.float32)
    missing = []
    for i, word in enumerate(vocab):
        if word in (PAD, UNK):
            continue
        j = table.index.get(word)
        if j is not None:
            rows[i] = table.matrix[j]
        else:
            missing.append(i)
    if encoder is not None and missing:
        rows[missing] = encoder.encode([vocab[i] for i in missing], batch_size=512)
    words = {w: c for w, c in counts.items() if any(ch.isalpha() for ch in w)}
    total = sum(words.values())
    covered = sum(c for w, c in words.items() if w in table.index)
    return VocabularyVectors(
        extra_words, rows, table.source, table.checksum, covered / total if total else 0.0
    )
