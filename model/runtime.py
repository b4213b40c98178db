"""The network's forward pass in numpy: what a classify request runs, without torch.

It reads the artifact's weights as they are (`weights.safetensors`, the tensor names
torch's modules gave them), so every model written by training loads with no conversion.
The same computation as `training/network.py`'s `IntentNet.forward` in evaluation mode;
`tests/model/test_runtime.py` holds the two equal on real data.

Vectorised over the batch: each distinct word of a batch is read from the tables and
projected into the recurrent layer's gates once (a batch of 256 has some 3,000 tokens and a
few hundred distinct words), both directions in one matrix product; only the recurrent
product h @ W_hh is left to the loop over time steps, for all rows and both directions at
once, and the top layer pools as it runs. Served models keep their lookup tables in int8
with a scale for each row's part (`Table`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from model.config import ModelConfig
from model.detector import nearest
from model.entities import Crf, constrained
from model.tokenizer import Encoded, Flat

Array = np.ndarray

# Rows of a recurrent layer's weights per unit of hidden size: torch's gate layout.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor a model of `cfg` stores (torch's state_dict names)."""
    dim, hidden, labels = cfg.embed_dim, cfg.hidden_dim, cfg.num_labels
    directions = 2 if cfg.bidirectional else 1
    step_dim = hidden * directions
    out_dim = step_dim * 2 if cfg.pooling == "maxmean" else step_dim
    shapes: dict[str, tuple[int, ...]] = {}
    if cfg.entity_tags:
        tags = cfg.entity_tags
        shapes |= {"tag_start": (tags,), "tag_transitions": (tags, tags), "tag_end": (tags,)}
    if cfg.vectors_dim:
        shapes["embed.vectors"] = (cfg.vocab_size, cfg.vectors_dim)
    shapes["embed.words.weight"] = (cfg.learned_rows, dim)
    if cfg.ngram_buckets:
        shapes["embed.ngrams.weight"] = (cfg.ngram_buckets + 1, dim)
    if cfg.vectors_dim:
        shapes["embed.project.weight"] = (dim, cfg.vectors_dim)
    rows = GATES[cfg.arch] * hidden
    for layer in range(cfg.num_layers):
        width = dim if layer == 0 else step_dim
        for suffix in ("", "_reverse")[:directions]:
            shapes[f"encoder.rnn.weight_ih_l{layer}{suffix}"] = (rows, width)
            shapes[f"encoder.rnn.weight_hh_l{layer}{suffix}"] = (rows, hidden)
            shapes[f"encoder.rnn.bias_ih_l{layer}{suffix}"] = (rows,)
            shapes[f"encoder.rnn.bias_hh_l{layer}{suffix}"] = (rows,)
    shapes |= {"head.weight": (labels, out_dim), "head.bias": (labels,)}
    if cfg.bag_buckets:
        shapes["bag.weight"] = (cfg.bag_buckets + 1, labels)
    if cfg.uses_char_bag:
        shapes["char_bag.weight"] = (cfg.ngram_buckets + 1, labels)
    if cfg.detector_rows:
        shapes |= {"detector.bank": (cfg.detector_rows, out_dim), "detector.starts": (labels + 1,)}
    if cfg.entity_tags:
        shapes |= {"tagger.weight": (cfg.entity_tags, step_dim), "tagger.bias": (cfg.entity_tags,)}
    return shapes


@dataclass
class Scores:
    """A scorer's output for a list of utterances, in input order."""

    logits: Array  # [rows, labels] float32
    near: Array | None  # each row's similarity to its top intent's training rows (with a detector)
    tags: list[Array]  # each row's tag logits [tokens, tags] (when asked, with a tagger)
    features: Array | None  # the pooled features (when asked)


@runtime_checkable
class Scorer(Protocol):
    """What the Predictor scores with: this module's `Runtime`, or training's torch network."""

    crf: Crf | None
    out_dim: int

    def score(
        self,
        encoded: Sequence[Encoded],
        in_scope: Array | None = None,
        batch_size: int = 256,
        tags: bool = False,
        features: bool = False,
    ) -> Scores: ...


@runtime_checkable
class HasWeights(Protocol):
    """A model that can hand over its weights as numpy arrays (training's IntentNet)."""

    def weights(self) -> dict[str, Array]: ...


@dataclass(frozen=True)
class Weights:
    """Weights already in numpy (read from another artifact) as a `HasWeights`, for the store to save."""

    arrays: dict[str, Array]

    def weights(self) -> dict[str, Array]:
        return self.arrays


# Rows gathered at once when summing runs: a bound on the temporary [runs, longest run, width] array.
_CHUNK_ROWS = 8192
# Runs summed in one group, each group padded to its own longest run.
_GROUP_RUNS = 64
# Rows quantized at once: a block that stays in the cache across its passes.
_QUANTIZE_ROWS = 2048


@dataclass
class Table:
    """A lookup table that ends in a row of zeros (what padded reads point at): fp32 rows, or
    int8 rows with a scale for each row's part (a quarter of the memory, faster to read than fp16).

    Parts are column ranges of different meaning (n-gram vectors beside the wide path's n-gram
    logits, whose values are some 30x smaller): each keeps its own scale, else the small one
    would round away."""

    values: Array  # [rows + 1, width]: float32, or int8 with `scale`
    scale: Array | None  # [rows + 1, parts] float32: part k of row i is values[i, part k] * scale[i, k]
    parts: tuple[tuple[int, int], ...]  # the column ranges

    @classmethod
    def of(cls, parts: Sequence[Array], int8: bool = False) -> Table:
        widths = [int(p.shape[1]) for p in parts]
        edges = np.cumsum([0, *widths]).tolist()
        ranges = tuple(itertools.pairwise(edges))
        rows = int(parts[0].shape[0])
        values = np.zeros((rows + 1, edges[-1]), dtype=np.int8 if int8 else np.float32)
        scale = np.zeros((rows + 1, len(parts)), dtype=np.float32) if int8 else None
        for k, ((lo, hi), part) in enumerate(zip(ranges, parts, strict=True)):
            part = np.asarray(part, dtype=np.float32)
            if scale is None:
                values[:-1, lo:hi] = part
                continue
            # Symmetric, a scale a row: each row keeps its own range (rare n-grams' rows are small).
            # In blocks of rows, so that every pass over a block finds it in the cache.
            for start in range(0, rows, _QUANTIZE_ROWS):
                block = part[start : start + _QUANTIZE_ROWS]
                peak = np.maximum(block.max(axis=1), -block.min(axis=1))
                factor = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
                scale[start : start + len(block), k] = factor
                scaled = block / factor[:, None]  # a copy: the caller's array stays as it was
                np.rint(scaled, out=scaled)
                values[start : start + len(block), lo:hi] = scaled
        return cls(values, scale, ranges)

    @property
    def width(self) -> int:
        return int(self.values.shape[1])

    def rows(self, ids: Array) -> Array:
        """[len(ids), width] fp32."""
        if self.scale is None:
            picked: Array = self.values[ids]
            return picked
        rows: Array = self.values[ids].astype(np.float32)
        for k, (lo, hi) in enumerate(self.parts):
            rows[:, lo:hi] *= self.scale[ids, k, None]
        return rows

    def run_sums(self, ids: Array, counts: Array) -> Array:
        """[len(counts), width] fp32: the sums of the rows at consecutive runs of `ids` of the given
        lengths (an empty run sums to 0).

        The runs are laid out padded ([runs, longest run], padding reading the zero row) and
        summed over the run axis: numpy's `add.reduceat` along rows walks each column apart,
        several times slower than the gather itself. Runs go in groups of neighbours, each padded
        to its own longest: callers pass runs of similar lengths side by side, so padding is little.
        """
        out = np.empty((len(counts), self.width), dtype=np.float32)
        ends = np.cumsum(counts)
        group = min(_GROUP_RUNS, max(1, _CHUNK_ROWS // max(int(counts.max(initial=1)), 1)))
        for start in range(0, len(counts), group):
            part = counts[start : start + group]
            width = max(int(part.max()), 1)
            padded = np.full((len(part), width), len(self.values) - 1, dtype=np.int64)
            first = int(ends[start] - counts[start])
            padded[np.arange(width) < part[:, None]] = ids[first : first + int(part.sum())]
            if self.scale is None:
                out[start : start + group] = self.values[padded].sum(axis=1)
                continue
            # Each part's scales weigh its int8 rows in one batched product:
            # [runs, 1, longest run] @ [runs, longest run, part's columns].
            rows = self.values[padded].astype(np.float32)
            weights = self.scale[padded]
            for k, (lo, hi) in enumerate(self.parts):
                out[start : start + group, lo:hi] = np.matmul(weights[:, None, :, k], rows[..., lo:hi])[:, 0]
        return out


def _per_text(rows: Array, lengths: Array, fill: float) -> Array:
    """Flat token rows [sum(lengths), C] as [texts, longest, C], `fill` after each text's end."""
    if len(lengths) == 1:
        return rows[None]
    longest = int(lengths.max())
    padded = np.full((len(lengths), longest, rows.shape[1]), fill, dtype=np.float32)
    padded[np.arange(longest) < lengths[:, None]] = rows
    return padded


@dataclass
class _Layer:
    """One recurrent layer, both directions, laid out for the loop (see `Runtime._recurrent`)."""

    w_in: Array  # [in, directions * gates]: every token's input projection in one product
    b_in: Array  # [directions * gates]
    w_rec: Array  # [directions, hidden, gates]: one batched product a step
    b_rec: Array | None  # [directions, 1, gates] (GRU only: the n gate's bias sits inside r * (...))


class Runtime:
    """An Intently model's forward pass in numpy: logits, pooled features, tag scores, detector similarity."""

    def __init__(self, cfg: ModelConfig, weights: Mapping[str, Array], int8_tables: bool = False):
        self.cfg = cfg
        self.hidden = cfg.hidden_dim
        self.directions = 2 if cfg.bidirectional else 1
        self.step_dim = self.hidden * self.directions
        self.out_dim = self.step_dim * 2 if cfg.pooling == "maxmean" else self.step_dim
        w = {k: np.asarray(v) for k, v in weights.items()}
        # The lookup tables: read a few rows a request, so int8 rows quarter their memory at a
        # small cost in precision (read back as fp32 rows; the arithmetic stays fp32).
        words = w["embed.words.weight"].astype(np.float32)
        if cfg.vectors_dim:
            # Folded once: the learned projection of every word's frozen vector plus its learned row.
            folded = w["embed.vectors"].astype(np.float32) @ w["embed.project.weight"].astype(np.float32).T
            folded[: cfg.learned_rows] += words
            words = folded
        self.words = Table.of([words], int8_tables)
        self.dim = cfg.embed_dim
        # The n-gram vectors and the wide path's n-gram weights side by side: one lookup serves both.
        self.subwords: Table | None = None
        if cfg.ngram_buckets:
            parts = [w["embed.ngrams.weight"]] + ([w["char_bag.weight"]] if cfg.uses_char_bag else [])
            self.subwords = Table.of(parts, int8_tables)
        self.bag = Table.of([w["bag.weight"]], int8_tables) if cfg.bag_buckets else None
        self.layers = [self._layer(w, n) for n in range(cfg.num_layers)]
        self.head_w = np.ascontiguousarray(w["head.weight"].astype(np.float32).T)
        self.head_b = w["head.bias"].astype(np.float32)
        self.tagger_w: Array | None = None
        self.tagger_b: Array | None = None
        self.crf: Crf | None = None
        if cfg.entity_tags:
            self.tagger_w = np.ascontiguousarray(w["tagger.weight"].astype(np.float32).T)
            self.tagger_b = w["tagger.bias"].astype(np.float32)
            self.crf = Crf(
                *constrained(
                    w["tag_start"].astype(np.float32),
                    w["tag_transitions"].astype(np.float32),
                    w["tag_end"].astype(np.float32),
                    (cfg.entity_tags - 1) // 2,
                )
            )
        self.bank: Array | None = None
        self.bounds: list[int] = []
        if cfg.detector_rows:
            # fp32: a CPU multiplies fp32 much faster than fp16.
            self.bank = w["detector.bank"].astype(np.float32)
            self.bounds = [int(b) for b in w["detector.starts"].tolist()]

    def _layer(self, w: Mapping[str, Array], n: int) -> _Layer:
        h, arch = self.hidden, self.cfg.arch
        w_in, b_in, w_rec, b_rec = [], [], [], []
        for suffix in ("", "_reverse")[: self.directions]:
            w_ih = w[f"encoder.rnn.weight_ih_l{n}{suffix}"].astype(np.float32)
            w_hh = w[f"encoder.rnn.weight_hh_l{n}{suffix}"].astype(np.float32)
            b_ih = w[f"encoder.rnn.bias_ih_l{n}{suffix}"].astype(np.float32)
            b_hh = w[f"encoder.rnn.bias_hh_l{n}{suffix}"].astype(np.float32)
            if arch == "lstm":
                # torch's gates i, f, g, o reordered to i, f, o, g, and the sigmoid gates' rows
                # halved: sigmoid(x) = (1 + tanh(x / 2)) / 2, so one tanh serves all four gates.
                order = np.r_[0 : 2 * h, 3 * h : 4 * h, 2 * h : 3 * h]
                scale = np.r_[np.full(3 * h, 0.5, np.float32), np.ones(h, np.float32)]
                w_ih, w_hh = w_ih[order] * scale[:, None], w_hh[order] * scale[:, None]
                bias = (b_ih + b_hh)[order] * scale
            elif arch == "gru":
                # Gates r, z, n; r and z halved for the same tanh form of the sigmoid. The hidden
                # side keeps its own bias: n = tanh(x_n + r * (h W_hn + b_hn)).
                scale = np.r_[np.full(2 * h, 0.5, np.float32), np.ones(h, np.float32)]
                w_ih, w_hh = w_ih * scale[:, None], w_hh * scale[:, None]
                bias = b_ih * scale
                b_rec.append((b_hh * scale)[None, :])
            else:
                bias = b_ih + b_hh
            w_in.append(w_ih.T)
            b_in.append(bias)
            w_rec.append(w_hh.T)
        return _Layer(
            np.ascontiguousarray(np.concatenate(w_in, axis=1)),
            np.concatenate(b_in),
            np.ascontiguousarray(np.stack(w_rec)),
            np.stack(b_rec) if b_rec else None,
        )

    def score(
        self,
        encoded: Sequence[Encoded],
        in_scope: Array | None = None,
        batch_size: int = 256,
        tags: bool = False,
        features: bool = False,
    ) -> Scores:
        """The network on encoded utterances, in batches of similar length; results in input order.

        `in_scope` (a bool per label) is needed for the detector's similarity, which reads the
        top in-scope intent.
        """
        n = len(encoded)
        logits = np.empty((n, self.cfg.num_labels), dtype=np.float32)
        near = np.empty(n, dtype=np.float32) if self.bank is not None and in_scope is not None else None
        kept = np.empty((n, self.out_dim), dtype=np.float32) if features else None
        tagging = tags and self.tagger_w is not None
        tag_rows: list[Array] = [np.empty(0)] * n if tagging else []
        order = sorted(range(n), key=lambda i: len(encoded[i].words)) if n > 1 else [0] * n
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            lo, fe, steps, lengths = self.forward([encoded[i] for i in idx], tagging)
            logits[idx] = lo
            if kept is not None:
                kept[idx] = fe
            if near is not None and in_scope is not None and self.bank is not None:
                top = np.where(in_scope, lo, -np.inf).argmax(axis=-1)
                near[idx] = nearest(self.bank, self.bounds, fe, top)
            if steps is not None and self.tagger_w is not None and self.tagger_b is not None:
                emissions = steps @ self.tagger_w + self.tagger_b
                for i, piece in zip(idx, np.split(emissions, np.cumsum(lengths)[:-1]), strict=True):
                    tag_rows[i] = piece
        return Scores(logits, near, tag_rows, kept)

    def forward(
        self, items: Sequence[Encoded], steps_too: bool = False
    ) -> tuple[Array, Array, Array | None, Array]:
        """Logits [B, labels], pooled features [B, out_dim], with `steps_too` the top layer's
        state at every token [N, step_dim], and the lengths [B]."""
        # A batch repeats its words (a few hundred distinct among thousands of tokens): each
        # distinct token's input row and first projection is worked out once.
        flat = Flat.of(items, distinct=len(items) > 1)
        lengths = flat.lengths
        x = self.words.rows(flat.words)
        chars = None
        if self.subwords is not None:
            counts = flat.ngram_counts
            sums = self.subwords.run_sums(flat.ngrams, counts)
            x += sums[:, : self.dim] / np.maximum(counts, 1)[:, None]
            if sums.shape[1] > self.dim:
                chars = sums[:, self.dim :]  # each token's share of the wide path's logits
        # The top layer pools as it runs; its states at every token are kept only for the tagger.
        projected, rows = x @ self.layers[0].w_in + self.layers[0].b_in, flat.rows
        for depth, layer in enumerate(self.layers):
            top = depth == len(self.layers) - 1
            keep = steps_too or not top
            steps, pooled = self._recurrent(layer, projected, lengths, rows, keep=keep, pool=top)
            if not top and steps is not None:
                next_layer = self.layers[depth + 1]
                projected, rows = steps @ next_layer.w_in + next_layer.b_in, None
        if chars is not None and flat.rows is not None:
            chars = chars[flat.rows]
        assert pooled is not None
        feats = pooled
        logits = feats @ self.head_w + self.head_b
        if self.bag is not None:
            logits += self.bag.run_sums(flat.bag, flat.bag_counts)
        if chars is not None:
            logits += _per_text(chars, lengths, 0.0).sum(axis=1)
        return logits, feats, steps if steps_too else None, lengths

    def _recurrent(
        self,
        layer: _Layer,
        projected: Array,
        lengths: Array,
        rows: Array | None = None,
        keep: bool = True,
        pool: bool = False,
    ) -> tuple[Array | None, Array | None]:
        """One layer over input projections [R, dirs * gates] of the flat tokens of utterances of
        `lengths` (token i's row is rows[i], or i without `rows`): with `keep` the states at
        every token [N tokens, step_dim], with `pool` the pooled features [B, out_dim].

        Utterances sorted longest first, so that at step t the rows still running are a prefix
        (as in torch's packed sequences); the backward direction reads each utterance from its
        own last token, so a row's steps never see padding.
        """
        h, dirs = self.hidden, self.directions
        gates = layer.w_rec.shape[2]
        tokens = int(lengths.sum())
        projected = projected.reshape(len(projected), dirs, gates)
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[order]
        longest = int(sorted_lengths[0])
        starts = (np.cumsum(lengths) - lengths)[order]
        steps = np.arange(longest)[:, None]
        active = (steps < sorted_lengths[None, :]).sum(axis=1).tolist()
        # The token each running row reads at step t, per direction: [T, dirs, B]. Only the running
        # prefix of each step is read, so the rest may point anywhere.
        at = np.stack([starts + steps, starts + sorted_lengths - 1 - steps][:dirs], axis=1)
        # Where each read comes from in `projected` (past the end, `at` points at no token: clipped).
        source = at if rows is None else rows[np.minimum(at, tokens - 1)]
        direction = np.arange(dirs)[:, None]
        state = np.zeros((dirs, len(lengths), h), dtype=np.float32)
        cell = np.zeros_like(state) if self.cfg.arch == "lstm" else None
        flat = np.empty((tokens, dirs, h), dtype=np.float32) if keep else None
        # All of one length (always so for one utterance): every step's inputs in one gather and
        # the states out in one scatter; else a gather and a scatter a step, of the running rows only.
        uniform = sorted_lengths[0] == sorted_lengths[-1]
        inputs = projected[source, direction] if uniform else None  # [T, dirs, B, gates]
        out = np.empty((longest, dirs, len(lengths), h), dtype=np.float32) if uniform and keep else None
        # Max and mean pooling kept up step by step (each row's states only while it runs), so
        # the states need not be laid out per utterance afterwards.
        pooling = self.cfg.pooling if pool else ""
        peak = np.full_like(state, -np.inf) if pooling in ("max", "maxmean") else None
        total = np.zeros_like(state) if pooling in ("mean", "maxmean") else None
        arch, w_rec, b_rec = self.cfg.arch, layer.w_rec, layer.b_rec
        for t in range(longest):
            n = active[t]
            prev = state[:, :n]
            # [dirs, n, gates], worked on in place: each step's inputs are read once.
            g = inputs[t] if inputs is not None else projected[source[t, :, :n], direction]
            if arch == "lstm" and cell is not None:
                g += prev @ w_rec
                np.tanh(g, out=g)
                sig = g[..., : 3 * h]
                sig *= 0.5
                sig += 0.5
                c = cell[:, :n]
                c *= sig[..., h : 2 * h]
                c += sig[..., :h] * g[..., 3 * h :]
                state[:, :n] = sig[..., 2 * h : 3 * h] * np.tanh(c)
            elif arch == "gru" and b_rec is not None:
                rec = prev @ w_rec + b_rec
                rz = g[..., : 2 * h]
                rz += rec[..., : 2 * h]
                np.tanh(rz, out=rz)
                rz *= 0.5
                rz += 0.5
                cand = np.tanh(g[..., 2 * h :] + rz[..., :h] * rec[..., 2 * h :])
                state[:, :n] = cand + rz[..., h:] * (prev - cand)
            else:
                g += prev @ w_rec
                state[:, :n] = np.tanh(g)
            if peak is not None:
                np.maximum(peak[:, :n], state[:, :n], out=peak[:, :n])
            if total is not None:
                total[:, :n] += state[:, :n]
            if out is not None:
                out[t] = state
            elif flat is not None:
                flat[at[t, :, :n], direction] = state[:, :n]
        if out is not None and flat is not None:
            flat[at, direction] = out
        steps_out = flat.reshape(tokens, dirs * h) if flat is not None else None
        if not pool:
            return steps_out, None
        # "last": torch's final state, the forward direction's at the last token and the
        # backward one's at the first, which is where each row's state stopped.
        mean = None if total is None else total / sorted_lengths[:, None].astype(np.float32)
        kinds: dict[str, list[Array | None]] = {"last": [state], "max": [peak], "mean": [mean]}
        parts = [peak, mean] if pooling == "maxmean" else kinds[pooling]
        # Each [dirs, B, h] in length order -> [B, dirs * h], side by side, in input order.
        pooled = np.concatenate([np.concatenate(list(p), axis=1) for p in parts if p is not None], axis=1)
        unsorted = np.empty_like(pooled)
        unsorted[order] = pooled
        return steps_out, unsorted
