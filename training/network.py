"""The recurrent intent classifier in torch, for training: embeddings -> RNN over packed sequences ->
pooling -> logits.

Serving runs the same computation in numpy (model/runtime.py) from the weights this
network saves; `tests/model/test_runtime.py` holds the two equal.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, invert_permutation

from model.artifact import ArtifactError, ModelMeta, load
from model.config import ModelConfig
from model.detector import nearest
from model.entities import FORBIDDEN, Crf, allowed
from model.runtime import Scores
from model.tokenizer import Encoded, Flat, Tokenizer

# Callable, not type[RNNBase]: RNNBase itself takes a mode first, the three subclasses do not.
_RNNS: dict[str, Callable[..., nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass
class Batch:
    """The tokens of a batch of encoded utterances, flat: no padding anywhere.

    Utterance lengths vary a lot, so a padded [batch, time] layout spent most of
    the embedding, pooling and masking work on padding. Tokens are concatenated
    instead and packed for the recurrent layer by `Encoder`. The n-grams of all
    tokens are one flat id list with offsets (an EmbeddingBag input).
    """

    words: Tensor  # [N] the word ids of all utterances, one after another
    ngram_ids: Tensor  # [M] flat
    ngram_offsets: Tensor  # [N] start of each token's n-grams
    lengths: Tensor  # [B] tokens per utterance, on the CPU as packing requires
    bag_ids: Tensor  # [K] sentence-bag buckets of all utterances, flat
    bag_offsets: Tensor  # [B] start of each utterance's bag
    ngram_starts: Tensor  # [B] start of each utterance's n-grams, for the wide path

    @classmethod
    def from_encoded(cls, items: Sequence[Encoded]) -> Batch:
        flat = Flat.of(items)
        ngram_offsets = np.cumsum(flat.ngram_counts) - flat.ngram_counts
        return cls(
            torch.from_numpy(flat.words),
            torch.from_numpy(flat.ngrams),
            torch.from_numpy(ngram_offsets),
            torch.from_numpy(flat.lengths),
            torch.from_numpy(flat.bag),
            torch.from_numpy(np.cumsum(flat.bag_counts) - flat.bag_counts),
            torch.from_numpy(ngram_offsets[np.cumsum(flat.lengths) - flat.lengths]),
        )


def _pack(x: Tensor, lengths: Tensor) -> tuple[PackedSequence, Tensor, Tensor]:
    """Flat token rows [N, D] as a PackedSequence, the utterance of each packed row, and its flat row.

    Equivalent to padding then `pack_padded_sequence`, without building the
    padded tensor.
    """
    sorted_lengths, order = lengths.sort(descending=True)
    starts = lengths.cumsum(0) - lengths
    steps = torch.arange(int(sorted_lengths[0]))
    present = steps[:, None] < sorted_lengths[None, :]  # [T, B] time-major, like the packed data
    rows = (starts[order][None, :] + steps[:, None])[present]
    owner = order.expand(len(steps), -1)[present]
    batch_sizes = present.sum(1)
    packed = PackedSequence(x[rows], batch_sizes, order, invert_permutation(order))
    return packed, owner, rows


class TokenEmbedding(nn.Module):
    """A word vector plus the mean of the token's hashed character n-gram vectors.

    With pretrained vectors the word vector is a learned projection of the word's
    frozen pretrained row plus a learned correction; words only the pretrained source
    knows (no row in the learned table) get the projection alone.

    The learned tables can produce sparse gradients: with 50k n-gram buckets a dense
    update of the whole table each step would dominate training time.
    """

    def __init__(self, cfg: ModelConfig, sparse: bool = False):
        super().__init__()
        dim = cfg.embed_dim
        self.learned_rows = cfg.learned_rows
        self.words = nn.Embedding(cfg.learned_rows, dim, padding_idx=0, sparse=sparse)
        self.ngrams = (
            nn.EmbeddingBag(cfg.ngram_buckets + 1, dim, mode="mean", sparse=sparse)
            if cfg.ngram_buckets
            else None
        )
        self.vectors: nn.Parameter | None = None
        self.project: nn.Linear | None = None
        self.folded: Tensor | None = None  # see fold()
        self.released = False  # see release_parts()
        if cfg.vectors_dim:
            # Stored in half precision: the table is frozen and mostly rows no training word uses.
            table = torch.zeros(cfg.vocab_size, cfg.vectors_dim, dtype=torch.float16)
            self.vectors = nn.Parameter(table, requires_grad=False)
            self.project = nn.Linear(cfg.vectors_dim, dim, bias=False)
        nn.init.normal_(self.words.weight, std=0.1)
        with torch.no_grad():
            self.words.weight[0].zero_()
            if self.ngrams is not None:
                nn.init.normal_(self.ngrams.weight, std=0.1)
                self.ngrams.weight[0].zero_()

    def fold(self) -> None:
        """Precompute learned row + projected vector for every word, for serving.

        The sum is one table lookup then, as in a model without vectors. Training
        mode drops it, since the learned parts change again.
        """
        if self.vectors is None or self.project is None:
            return
        with torch.inference_mode(False), torch.no_grad():
            table = self.project(self.vectors.float())
            table[: self.learned_rows] += self.words.weight
            self.folded = table

    def release_parts(self) -> None:
        """Keep only the folded table: a served model never trains, and the parts cost memory."""
        if self.folded is None:
            return
        self.vectors = None
        self.project = None
        self.words = nn.Embedding(1, self.words.embedding_dim)  # the folded table holds its rows
        self.released = True

    def half_tables(self) -> None:
        """Keep the word and n-gram tables in half precision: a served model reads a few rows a request."""
        if self.folded is not None:
            self.folded = self.folded.half()
        if self.ngrams is not None:
            self.ngrams.weight.data = self.ngrams.weight.data.half()
        if self.vectors is None:
            self.words.weight.data = self.words.weight.data.half()
        self.released = True  # half-precision tables are not trained further

    def train(self, mode: bool = True) -> TokenEmbedding:
        if mode and self.released:
            raise RuntimeError("this model was loaded for serving only; load it again to train it")
        if mode:
            self.folded = None
        return super().train(mode)

    def forward(self, batch: Batch) -> Tensor:
        ids = batch.words
        if self.folded is not None and not self.training:
            x = nn.functional.embedding(ids, self.folded).float()  # a no-op for fp32 tables
        elif self.vectors is not None and self.project is not None:
            learned = torch.where(ids < self.learned_rows, ids, 0)
            x = self.words(learned) + self.project(self.vectors[ids].float())
        else:
            x = self.words(ids).float()
        if self.ngrams is not None:
            x = x + self.ngrams(batch.ngram_ids, batch.ngram_offsets).float()
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
        return self.step_dim * 2 if self.pooling == "maxmean" else self.step_dim

    @property
    def step_dim(self) -> int:
        return self.rnn.hidden_size * self.directions

    def forward(self, x: Tensor, lengths: Tensor, steps_too: bool = False) -> tuple[Tensor, Tensor | None]:
        """Pooled features [B, out_dim] of flat token rows `x` [N, D], and with `steps_too` the top
        layer's state at every token [N, step_dim]."""
        batch, longest = len(lengths), int(lengths.max())
        flat: Tensor | None = None
        if longest == int(lengths.min()):
            # All of one length (always so for one utterance): no packing needed.
            steps, state = self.rnn(x.view(batch, longest, -1))
            if steps_too:
                flat = steps.reshape(batch * longest, -1)
            if self.pooling == "last":
                return self._last(state), flat
            mean = steps.mean(1)
            peak = steps.amax(1) if self.pooling != "mean" else None
        else:
            packed, owner, order = _pack(x, lengths)
            out, state = self.rnn(packed)
            if steps_too:
                flat = out.data.new_empty(out.data.shape).index_copy_(0, order, out.data)
            if self.pooling == "last":
                return self._last(state), flat
            rows = out.data  # [N, H], one per real token
            total = rows.new_zeros(batch, rows.size(1)).index_add_(0, owner, rows)
            mean = total / lengths[:, None].to(rows.dtype)
            peak = None
            if self.pooling != "mean":
                index = owner[:, None].expand_as(rows)
                peak = rows.new_full((batch, rows.size(1)), float("-inf"))
                peak = peak.scatter_reduce_(0, index, rows, "amax", include_self=False)
        if self.pooling == "mean":
            return mean, flat
        assert peak is not None
        return (peak if self.pooling == "max" else torch.cat([peak, mean], dim=-1)), flat

    def _last(self, state: Tensor | tuple[Tensor, Tensor]) -> Tensor:
        h = state[0] if isinstance(state, tuple) else state
        last = h.view(-1, self.directions, h.size(1), h.size(2))[-1]  # top layer
        return torch.cat(list(last), dim=-1)


class IntentNet(nn.Module):
    """Utterance -> intent logits: a recurrent "deep" path plus an optional linear "wide" path.

    The wide path is a bag of hashed word uni- and bi-grams, and optionally of
    the tokens' character n-grams; its logits are added to the deep path's.
    """

    def __init__(self, cfg: ModelConfig, sparse: bool = False):
        super().__init__()
        self.cfg = cfg
        self.embed = TokenEmbedding(cfg, sparse)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.encoder.out_dim, cfg.num_labels)
        # Bucket ids start at 1, so row 0 is never read. No `padding_idx` to say so:
        # with one, torch's EmbeddingBag takes a much slower path.
        self.bag = (
            nn.EmbeddingBag(cfg.bag_buckets + 1, cfg.num_labels, mode="sum", sparse=sparse)
            if cfg.bag_buckets
            else None
        )
        self.char_bag = (
            nn.EmbeddingBag(cfg.ngram_buckets + 1, cfg.num_labels, mode="sum", sparse=sparse)
            if cfg.uses_char_bag
            else None
        )
        for table in (self.bag, self.char_bag):
            if table is not None:
                nn.init.zeros_(table.weight)
        self.detector = (
            KnownRows(cfg.detector_rows, self.encoder.out_dim, cfg.num_labels) if cfg.detector_rows else None
        )
        # Jointly trained: the states that pool into the intent also tag the tokens, and a CRF
        # scores which tag may follow which (model/entities.py).
        self.tagger = nn.Linear(self.encoder.step_dim, cfg.entity_tags) if cfg.entity_tags else None
        if cfg.entity_tags:
            self.tag_start = nn.Parameter(torch.zeros(cfg.entity_tags))
            self.tag_transitions = nn.Parameter(torch.zeros(cfg.entity_tags, cfg.entity_tags))
            self.tag_end = nn.Parameter(torch.zeros(cfg.entity_tags))

    def crf_scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """The CRF's start, transition [from, to] and end scores, the BIO rule's forbidden moves set."""
        return constrained(
            self.tag_start, self.tag_transitions, self.tag_end, (self.cfg.entity_tags - 1) // 2
        )

    def attach_detector(self, features: Tensor, labels: Tensor) -> None:
        """Keep these training rows' features for the unknown-intent detector."""
        self.cfg = replace(self.cfg, detector_rows=len(features))
        self.detector = KnownRows(len(features), self.encoder.out_dim, self.cfg.num_labels)
        self.detector.fill(features, labels, self.cfg.num_labels)

    def configure_optimizers(
        self, lr: float, weight_decay: float, slow: Sequence[nn.Parameter] = (), slow_factor: float = 1.0
    ) -> tuple[list[torch.optim.Optimizer], list[nn.Parameter]]:
        """AdamW for the dense weights, SparseAdam for the tables built with sparse gradients;
        the `slow` ones at `slow_factor` times the learning rate.

        Also returns the dense weights: only they are clipped (a sparse gradient has no norm to clip).
        """
        sparse = [p for m in self.modules() if getattr(m, "sparse", False) for p in m.parameters()]
        sparse_ids, slow_ids = {id(p) for p in sparse}, {id(p) for p in slow}
        dense = [p for p in self.parameters() if id(p) not in sparse_ids and p.requires_grad]

        def groups(params: list[nn.Parameter]) -> list[dict[str, Any]]:
            fast = [p for p in params if id(p) not in slow_ids]
            low = [p for p in params if id(p) in slow_ids]
            both = ({"params": fast, "lr": lr}, {"params": low, "lr": lr * slow_factor})
            return [g for g in both if g["params"]]

        optimizers: list[torch.optim.Optimizer] = [
            torch.optim.AdamW(groups(dense), weight_decay=weight_decay)
        ]
        if sparse:
            optimizers.append(torch.optim.SparseAdam(groups(sparse)))
        return optimizers, dense

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The weights a pretrained encoder starts (training/encoder.py `start_from`)."""
        tables = [self.embed.words] + ([self.embed.ngrams] if self.embed.ngrams is not None else [])
        return [p for m in [*tables, self.encoder.rnn] for p in m.parameters()]

    def half_tables(self) -> None:
        """The embedding and wide-path tables in half precision: torch's serving form before
        model/runtime.py, kept as the benchmarks' baseline."""
        self.embed.half_tables()
        for table in (self.bag, self.char_bag):
            if table is not None:
                table.weight.data = table.weight.data.half()

    def forward(self, batch: Batch, tags: bool = False) -> Output:
        """The one pass training and the equality test run: both paths' logits apart (training fits
        each on its own), the pooled features (the detector reads them) and, with `tags` and a
        tagger, the tag logits of every token."""
        x = self.embed_dropout(self.embed(batch))
        features, steps = self.encoder(x, batch.lengths, tags and self.tagger is not None)
        deep = self.head(self.dropout(features))
        wide = None
        if self.bag is not None:
            wide = self.bag(batch.bag_ids, batch.bag_offsets).float()
        if self.char_bag is not None:
            chars = self.char_bag(batch.ngram_ids, batch.ngram_starts).float()
            wide = chars if wide is None else wide + chars
        tag_logits = None if steps is None or self.tagger is None else self.tagger(self.dropout(steps))
        return Output(deep, wide, features, tag_logits)

    def weights(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays, as the artifact stores them and model/runtime.py reads them."""
        return {k: v.detach().cpu().contiguous().numpy() for k, v in self.state_dict().items()}


@dataclass
class Output:
    deep: Tensor  # [B, labels] the recurrent path's logits
    wide: Tensor | None  # [B, labels] the linear path's, when the model has one
    features: Tensor  # [B, out_dim] the pooled features
    tags: Tensor | None  # [N, entity_tags] every token's tag logits, when asked and with a tagger

    @property
    def logits(self) -> Tensor:
        return self.deep if self.wide is None else self.deep + self.wide


class KnownRows(nn.Module):
    """Unit feature vectors of training rows, grouped by intent, in half precision (model/detector.py).

    `starts[k]..starts[k+1]` are intent k's rows. Stored as buffers, so they travel
    in `weights.safetensors` with the rest of the network.
    """

    def __init__(self, rows: int, dim: int, num_labels: int):
        super().__init__()
        self.register_buffer("bank", torch.zeros(rows, dim, dtype=torch.float16))
        # Float: the artifact loader accepts floating-point tensors only. Exact below 2**24.
        self.register_buffer("starts", torch.zeros(num_labels + 1))

    def fill(self, features: Tensor, labels: Tensor, num_labels: int) -> None:
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=num_labels)
        self.bank = nn.functional.normalize(features[order].float(), dim=-1).half()
        self.starts = torch.cat([torch.zeros(1), counts.cumsum(0).float()])

    def similarity(self, features: Tensor, predicted: Tensor) -> Tensor:
        """[B]: cosine to the nearest training row of each row's predicted intent (-1: none)."""
        bank, bounds = self.bank.float().numpy(), self.starts.long().tolist()
        return torch.from_numpy(nearest(bank, bounds, features.float().numpy(), predicted.numpy()))


def constrained(
    start: Tensor, transitions: Tensor, end: Tensor, num_types: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The learned CRF scores with every move the BIO rule forbids set to FORBIDDEN (model/entities.py)."""
    first, after = (torch.from_numpy(a) for a in allowed(num_types))
    return torch.where(first, start, FORBIDDEN), torch.where(after, transitions, FORBIDDEN), end


def crf_loss(
    emissions: Tensor, tags: Tensor, mask: Tensor, start: Tensor, transitions: Tensor, end: Tensor
) -> Tensor:
    """Mean negative log-likelihood of the gold `tags` [B, L] under the CRF; `mask` [B, L] marks tokens.

    `start`, `transitions` [from, to] and `end` are the scores with the forbidden moves
    already set to FORBIDDEN (see `constrained`).
    """
    lengths = mask.sum(1)
    weight = mask.to(emissions.dtype)
    gold = (emissions.gather(2, tags[:, :, None])[:, :, 0] * weight).sum(1) + start[tags[:, 0]]
    gold = gold + (transitions[tags[:, :-1], tags[:, 1:]] * weight[:, 1:]).sum(1)
    gold = gold + end[tags.gather(1, (lengths - 1)[:, None])[:, 0]]
    # The forward algorithm, its log-sum-exp over the previous tag as a matrix product:
    # exp(alpha - max) @ exp(transitions) is [B, T] x [T, T] instead of a [B, T, T] tensor.
    moves = transitions.exp()
    alpha = start + emissions[:, 0]  # [B, tags]: log-sum of the scores of paths ending in each tag
    for t in range(1, emissions.size(1)):
        peak = alpha.max(dim=1, keepdim=True).values
        step = ((alpha - peak).exp() @ moves).clamp_min(1e-30).log() + peak + emissions[:, t]
        alpha = torch.where(mask[:, t, None], step, alpha)
    return (torch.logsumexp(alpha + end, dim=1) - gold).mean()


def quantize_dynamic(net: IntentNet, inplace: bool = False) -> IntentNet:
    """int8 weights for LSTM/GRU and linear layers, activations quantized on the fly: torch's serving
    form before model/runtime.py, kept as the benchmarks' baseline. A plain tanh RNN has no quantized
    kernel, so only its linear layer is converted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic as _quantize

        layers = {nn.LSTM, nn.GRU, nn.Linear}
        # In place: no second copy of the embedding tables while quantizing.
        quantized: IntentNet = _quantize(net, layers, dtype=torch.qint8, inplace=inplace)
        return quantized


class TorchScorer:
    """The torch network as a `model.runtime.Scorer`: training scores validation rows with it, and a
    `Predictor` built on it is the torch path the equality test and the benchmarks compare with."""

    def __init__(self, net: IntentNet):
        self.net = net
        self.out_dim = net.encoder.out_dim
        self.crf: Crf | None = None
        if net.tagger is not None:
            with torch.no_grad():
                self.crf = Crf(*(t.numpy() for t in net.crf_scores()))

    def score(
        self,
        encoded: Sequence[Encoded],
        in_scope: np.ndarray | None = None,
        batch_size: int = 256,
        tags: bool = False,
        features: bool = False,
    ) -> Scores:
        return run_network(self.net, encoded, in_scope, batch_size, tags, features).numpy()


@dataclass
class NetworkScores:
    logits: Tensor  # [rows, labels]
    near: Tensor | None  # each row's similarity to its top intent's training rows (with a detector)
    tags: list[Tensor]  # each row's tag logits [tokens, tags] (when asked, with a tagger)
    features: Tensor | None  # the pooled features (when asked)

    def numpy(self) -> Scores:
        return Scores(
            self.logits.numpy(),
            None if self.near is None else self.near.numpy(),
            [t.numpy() for t in self.tags],
            None if self.features is None else self.features.numpy(),
        )


def run_network(
    net: IntentNet,
    encoded: Sequence[Encoded],
    in_scope: Tensor | np.ndarray | None = None,
    batch_size: int = 256,
    tags: bool = False,
    features: bool = False,
) -> NetworkScores:
    """The network on encoded utterances in evaluation mode, in batches of similar length (less padding);
    results in input order. Training scores validation rows here."""
    net.eval()
    n = len(encoded)
    scope = None if in_scope is None else torch.as_tensor(in_scope, dtype=torch.bool)
    logits = torch.empty(n, net.cfg.num_labels)
    # The detector's similarity needs the top in-scope intent, hence `in_scope`.
    near = torch.empty(n) if net.detector is not None and scope is not None else None
    kept = torch.empty(n, net.encoder.out_dim) if features else None
    tag_rows: list[Tensor] = [torch.empty(0)] * n if tags and net.tagger is not None else []
    order = sorted(range(n), key=lambda i: len(encoded[i].words))
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = Batch.from_encoded([encoded[i] for i in idx])
            out = net(batch, tags=bool(tag_rows))
            lo = out.logits
            logits[idx] = lo
            if kept is not None:
                kept[idx] = out.features
            if near is not None and net.detector is not None and scope is not None:
                top = lo.masked_fill(~scope, -math.inf).argmax(dim=-1)
                near[idx] = net.detector.similarity(out.features, top)
            if out.tags is not None:
                for i, piece in zip(idx, out.tags.split(batch.lengths.tolist()), strict=True):
                    tag_rows[i] = piece
    return NetworkScores(logits, near, tag_rows, kept)


def load_net(model_dir: str | Path) -> tuple[IntentNet, ModelMeta, Tokenizer]:
    """The torch network of a model directory (to train it further, or to compare with the runtime);
    raises ArtifactError with a clear message."""
    weights, meta, tokenizer = load(model_dir)
    net = IntentNet(meta.model)
    try:
        net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    except RuntimeError as exc:  # the shapes were checked against the same config: a mismatch is a bug
        raise ArtifactError(f"{model_dir}: {exc}") from None
    net.eval()
    return net, meta, tokenizer
