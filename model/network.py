"""The recurrent intent classifier: embeddings -> RNN over packed sequences -> pooling -> logits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.config import ModelConfig
from model.tokenizer import Encoded

_RNNS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass
class Batch:
    """Padded id tensors for a batch of encoded utterances.

    The n-grams of all token slots are one flat id list with offsets (an
    EmbeddingBag input), so no [batch, time, n-grams, dim] tensor is built.
    """

    words: Tensor  # [B, T]
    ngram_ids: Tensor  # [N] flat
    ngram_offsets: Tensor  # [B * T] start of each token slot's n-grams
    lengths: Tensor  # [B], on the CPU as packing requires
    bag: Tensor  # [B, M]

    @classmethod
    def from_encoded(cls, items: Sequence[Encoded]) -> Batch:
        n = len(items)
        t = max(len(e.words) for e in items)
        m = max((len(e.bag) for e in items), default=0) or 1
        words = np.zeros((n, t), dtype=np.int64)
        bag = np.zeros((n, m), dtype=np.int64)
        flat: list[int] = []
        sizes = np.zeros(n * t, dtype=np.int64)
        for i, e in enumerate(items):
            words[i, : len(e.words)] = e.words
            bag[i, : len(e.bag)] = e.bag
            for j, g in enumerate(e.ngrams):
                flat.extend(g)
                sizes[i * t + j] = len(g)
        offsets = np.zeros(n * t, dtype=np.int64)
        np.cumsum(sizes[:-1], out=offsets[1:])
        return cls(
            torch.from_numpy(words),
            torch.tensor(flat, dtype=torch.long),
            torch.from_numpy(offsets),
            torch.tensor([len(e.words) for e in items], dtype=torch.long),
            torch.from_numpy(bag),
        )


class TokenEmbedding(nn.Module):
    """A word vector plus the mean of the token's hashed character n-gram vectors.

    Both tables can produce sparse gradients: with 50k n-gram buckets a dense
    update of the whole table each step would dominate training time.
    """

    def __init__(self, vocab_size: int, ngram_buckets: int, dim: int, sparse: bool = False):
        super().__init__()
        self.words = nn.Embedding(vocab_size, dim, padding_idx=0, sparse=sparse)
        self.ngrams = (
            nn.EmbeddingBag(ngram_buckets + 1, dim, mode="mean", sparse=sparse) if ngram_buckets else None
        )
        nn.init.normal_(self.words.weight, std=0.1)
        with torch.no_grad():
            self.words.weight[0].zero_()
            if self.ngrams is not None:
                nn.init.normal_(self.ngrams.weight, std=0.1)
                self.ngrams.weight[0].zero_()

    def forward(self, batch: Batch) -> Tensor:
        x = self.words(batch.words)
        if self.ngrams is not None:
            x = x + self.ngrams(batch.ngram_ids, batch.ngram_offsets).view_as(x)
        return x


class Encoder(nn.Module):
    """A recurrent layer stack that never reads padding (packed sequences)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.rnn = _RNNS[cfg.arch](
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.pooling = cfg.pooling
        self.directions = 2 if cfg.bidirectional else 1

    @property
    def out_dim(self) -> int:
        per_step = self.rnn.hidden_size * self.directions
        return per_step * 2 if self.pooling == "maxmean" else per_step

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if bool((lengths == x.size(1)).all()):
            # No padding anywhere (always so for one utterance): packing would only cost time.
            steps, state = self.rnn(x)
        else:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, state = self.rnn(packed)
            steps = None if self.pooling == "last" else pad_packed_sequence(out, batch_first=True)[0]
        if self.pooling == "last":
            h = state[0] if isinstance(state, tuple) else state
            last = h.view(-1, self.directions, h.size(1), h.size(2))[-1]  # top layer
            return torch.cat(list(last), dim=-1)
        assert steps is not None  # [B, T, H]
        mask = (torch.arange(steps.size(1))[None, :] < lengths[:, None]).unsqueeze(-1)
        mean = (steps * mask).sum(1) / lengths[:, None].to(steps.dtype)
        if self.pooling == "mean":
            return mean
        peak = steps.masked_fill(~mask, float("-inf")).amax(1)
        return peak if self.pooling == "max" else torch.cat([peak, mean], dim=-1)


class IntentNet(nn.Module):
    """Utterance -> intent logits. Optionally adds a linear bag-of-n-grams path."""

    def __init__(self, cfg: ModelConfig, sparse: bool = False):
        super().__init__()
        self.cfg = cfg
        self.embed = TokenEmbedding(cfg.vocab_size, cfg.ngram_buckets, cfg.embed_dim, sparse)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.encoder.out_dim, cfg.num_labels)
        self.bag = (
            nn.EmbeddingBag(cfg.bag_buckets + 1, cfg.num_labels, mode="sum", padding_idx=0, sparse=sparse)
            if cfg.bag_buckets
            else None
        )
        if self.bag is not None:
            nn.init.zeros_(self.bag.weight)

    def features(self, batch: Batch) -> Tensor:
        x = self.embed_dropout(self.embed(batch))
        return self.encoder(x, batch.lengths)

    def forward(self, batch: Batch) -> Tensor:
        logits = self.head(self.dropout(self.features(batch)))
        if self.bag is not None:
            logits = logits + self.bag(batch.bag)
        return logits
