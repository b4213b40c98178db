"""Hyper-parameters of the network and the tokenizer, in one place.

Everything the artifact needs to rebuild an identical network is here, so
`model.json` can store a config and loading can rebuild the module from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Arch = Literal["lstm", "gru", "rnn"]
Pooling = Literal["max", "mean", "maxmean", "last"]

ARCHS: tuple[str, ...] = ("lstm", "gru", "rnn")
POOLINGS: tuple[str, ...] = ("max", "mean", "maxmean", "last")


@dataclass(frozen=True)
class TokenizerConfig:
    """How text becomes tokens and sub-word features."""

    lowercase: bool = True
    max_tokens: int = 64
    # Character n-grams of each token, hashed into buckets (fastText style):
    # words the vocabulary never saw ("wether") still share n-grams with known ones.
    ngram_min: int = 3
    ngram_max: int = 5
    ngram_buckets: int = 50_000
    max_ngrams_per_token: int = 24

    @property
    def uses_subwords(self) -> bool:
        return self.ngram_buckets > 0


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the recurrent classifier."""

    vocab_size: int
    num_labels: int
    arch: Arch = "lstm"
    embed_dim: int = 256
    hidden_dim: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    pooling: Pooling = "maxmean"
    dropout: float = 0.4
    ngram_buckets: int = 50_000
    # A sentence-level bag of hashed word uni/bi-grams feeding the classifier
    # directly: a linear "wide" path beside the recurrent "deep" path.
    bag_buckets: int = 0
    # The wide path also reads every token's hashed character n-grams, which
    # makes it a linear model over words and characters, like TF-IDF + logistic
    # regression: strong with few examples, where the recurrent path is weak.
    bag_char_ngrams: bool = False
    # Width of a frozen table of pretrained word vectors read beside the learned one
    # (0: none). Its rows cover the training words and frequent words of the source.
    vectors_dim: int = 0
    # Rows of the learned word table: the words seen in training, which come first in
    # the vocabulary. 0 means the whole vocabulary (models without vectors).
    learned_vocab: int = 0
    # Training rows kept for the unknown-intent detector (model/detector.py); 0: none.
    detector_rows: int = 0
    # BIO tags of the entity tagger on the recurrent states (model/entities.py); 0: no tagger.
    entity_tags: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        for name in ("vocab_size", "num_labels", "embed_dim", "hidden_dim", "num_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive")
        if self.vectors_dim < 0 or not 0 <= self.learned_vocab <= self.vocab_size:
            raise ValueError("vectors_dim and learned_vocab must be within 0..vocab_size")
        if self.detector_rows < 0:
            raise ValueError("detector_rows must not be negative")
        if self.entity_tags < 0 or (self.entity_tags and self.entity_tags % 2 == 0):
            raise ValueError("entity_tags must be 0 or 1 + 2 x the number of entity types")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        for name in ("bidirectional", "bag_char_ngrams"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")

    @property
    def uses_char_bag(self) -> bool:
        return self.bag_char_ngrams and self.ngram_buckets > 0

    @property
    def learned_rows(self) -> int:
        return self.learned_vocab or self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # Written only when on, so a model without them still loads in releases before them.
        for name in ("bag_char_ngrams", "vectors_dim", "learned_vocab", "detector_rows", "entity_tags"):
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model settings: {sorted(unknown)}")
        return cls(**data)


def tokenizer_config_from_dict(data: dict[str, Any]) -> TokenizerConfig:
    known = {f.name for f in fields(TokenizerConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown tokenizer settings: {sorted(unknown)}")
    return TokenizerConfig(**data)
