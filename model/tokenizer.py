"""Text to token ids: normalisation, word tokens, vocabulary, hashed sub-words.

Tokens are word-level so the recurrent network reads an utterance word by
word; every token also carries hashed character n-grams so that a word the
vocabulary never saw ("wether", a new product name) still has a signal.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from model.config import TokenizerConfig

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

# Ideographs and kana are written without spaces: one token per character.
_CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
_TOKEN = re.compile(
    rf"{_CJK}"  # one CJK character
    r"|\d+(?:[.,:/]\d+)+"  # 6:30, 3.5, 1,000, 12/05
    r"|[^\W_]+(?:'[^\W_]+)*"  # words, numbers, contractions (what's, don't)
    r"|[^\w\s]"  # a punctuation mark or symbol (emoji included)
)
# Texts up to this long are split in one findall; at worst a few thousand tokens.
_FINDALL_CHARS = 2048
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalize(text: str, lowercase: bool = True) -> str:
    """NFKC, unified apostrophes, control and format characters turned into spaces."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    if not text.isprintable():  # in C; the per-character loop only for the rare text that needs it
        text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return text.casefold() if lowercase else text


def tokenize(text: str, config: TokenizerConfig | None = None) -> list[str]:
    config = config or TokenizerConfig()
    text = normalize(text, config.lowercase)
    if len(text) <= _FINDALL_CHARS:
        return _TOKEN.findall(text)[: config.max_tokens]  # one call into C: the common case
    # finditer + islice: a huge input is not split into millions of tokens only to keep 64.
    matches = itertools.islice(_TOKEN.finditer(text), config.max_tokens)
    return [m.group() for m in matches]


def token_spans(text: str, config: TokenizerConfig | None = None) -> list[tuple[int, int]]:
    """Where each token of `tokenize(text)` is in `text`: [start, end) character offsets.

    Normalisation can change a text's length (NFKC turns "ﬁ" into "fi"), so for text
    that is not ASCII each character is normalised on its own and its output mapped back.
    """
    config = config or TokenizerConfig()
    if text.isascii() and text.isprintable():  # normalisation changes no offset
        return [m.span() for m in itertools.islice(_TOKEN.finditer(text), config.max_tokens)]
    pieces = [normalize(ch, config.lowercase) for ch in text]
    origin = [i for i, piece in enumerate(pieces) for _ in piece]
    origin.append(len(text))
    found = itertools.islice(_TOKEN.finditer("".join(pieces)), config.max_tokens)
    return [(origin[m.start()], origin[m.end() - 1] + 1) for m in found]


def char_ngrams(token: str, n_min: int, n_max: int) -> list[str]:
    marked = f"<{token}>"
    return [marked[i : i + n] for n in range(n_min, n_max + 1) for i in range(len(marked) - n + 1)]


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's `hash` is salted)."""
    return zlib.crc32(text.encode("utf-8"))


@dataclass
class Encoded:
    """One utterance as ids: words, per-word n-gram buckets, sentence bag."""

    words: list[int]
    ngrams: list[list[int]]
    bag: list[int]


@dataclass
class Flat:
    """Encoded utterances as flat int64 id arrays, no padding: what both networks read."""

    words: np.ndarray  # [N] the word ids of all utterances, one after another
    ngrams: np.ndarray  # [M] every token's n-gram buckets, one after another
    ngram_counts: np.ndarray  # [N] n-grams of each token
    bag: np.ndarray  # [K] every utterance's sentence-bag buckets
    bag_counts: np.ndarray  # [B] bag buckets of each utterance
    lengths: np.ndarray  # [B] tokens of each utterance
    # With `distinct`: words, ngrams and ngram_counts hold each distinct token once, and this
    # maps every token of the utterances, in order, to its row there.
    rows: np.ndarray | None = None

    @classmethod
    def of(cls, items: Sequence[Encoded], distinct: bool = False) -> Flat:
        # Flat Python lists, then numpy once: converting element by element is much slower.
        words: list[int] = []
        ngrams: list[int] = []
        ngram_counts: list[int] = []
        bag: list[int] = []
        bag_counts: list[int] = []
        rows: list[int] = []
        # A known word's n-grams follow from the word, so its id is its key; an unknown
        # word is keyed by its n-grams (two unknown words with the same ones read the same).
        seen: dict[int | tuple[int, ...], int] = {}
        for e in items:
            bag += e.bag
            bag_counts.append(len(e.bag))
            if not distinct:
                words += e.words
                for g in e.ngrams:
                    ngrams += g
                ngram_counts += map(len, e.ngrams)
                continue
            for word, grams in zip(e.words, e.ngrams, strict=True):
                key = word if word > UNK_ID else tuple(grams)
                row = seen.get(key)
                if row is None:
                    row = seen[key] = len(words)
                    words.append(word)
                    ngrams += grams
                    ngram_counts.append(len(grams))
                rows.append(row)

        def ids(values: list[int]) -> np.ndarray:
            return np.array(values, dtype=np.int64)

        lengths = ids([len(e.words) for e in items])
        kept = ids(rows) if distinct else None
        return cls(ids(words), ids(ngrams), ids(ngram_counts), ids(bag), ids(bag_counts), lengths, kept)


class _Token(NamedTuple):
    """Everything `encode` needs of one token, worked out once and cached."""

    word: int  # vocabulary id
    ngrams: list[int]  # character n-gram buckets
    unigram: int  # sentence-bag bucket of the word itself, 0 without a bag
    bigram_state: int  # crc32 of "b:<token>": a bigram's hash continues from it
    bigram_tail: bytes  # " <token>" in UTF-8: what a bigram ending here adds


class Tokenizer:
    """Maps text to ids with a fixed vocabulary; cheap to call per request."""

    def __init__(self, vocab: Sequence[str], config: TokenizerConfig, bag_buckets: int = 0):
        if len(vocab) < 2 or vocab[PAD_ID] != PAD or vocab[UNK_ID] != UNK:
            raise ValueError("vocabulary must start with <pad>, <unk>")
        self.config = config
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        if len(self.index) != len(self.vocab):
            raise ValueError("vocabulary has duplicate entries")
        self.bag_buckets = bag_buckets
        self._cache: dict[str, _Token] = {}

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        config: TokenizerConfig,
        min_count: int = 1,
        max_size: int = 100_000,
        bag_buckets: int = 0,
    ) -> Tokenizer:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(tokenize(text, config))
        ranked = sorted(
            (tok for tok, c in counts.items() if c >= min_count),
            key=lambda tok: (-counts[tok], tok),
        )
        return cls([PAD, UNK, *ranked[: max_size - 2]], config, bag_buckets)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_ngrams(self, token: str) -> list[int]:
        """Bucket ids (1-based; 0 is padding) of a token's character n-grams."""
        cfg = self.config
        if not cfg.uses_subwords or token == UNK:
            return []
        # Only the first max_ngrams_per_token n-grams are kept, shortest first, so a prefix
        # of the token gives exactly them: a huge "word" must not build all of its n-grams.
        prefix = token[: cfg.max_ngrams_per_token + cfg.ngram_min]
        grams = char_ngrams(prefix, cfg.ngram_min, cfg.ngram_max)[: cfg.max_ngrams_per_token]
        return [1 + stable_hash(g) % cfg.ngram_buckets for g in grams]

    def _token(self, token: str) -> _Token:
        entry = self._cache.get(token)
        if entry is not None:
            return entry
        # The bag hashes "w:<a>" and "b:<a> <b>"; crc32 can continue from a prefix's
        # value, so a bigram costs one call on cached bytes instead of a new string.
        state = zlib.crc32(f"b:{token}".encode())
        unigram = 1 + stable_hash(f"w:{token}") % self.bag_buckets if self.bag_buckets else 0
        entry = _Token(
            self.index.get(token, UNK_ID), self.token_ngrams(token), unigram, state, f" {token}".encode()
        )
        # Bounded in count and in size: request text is untrusted, and real words are short.
        if len(token) <= 32 and len(self._cache) < 50_000:
            self._cache[token] = entry
        return entry

    def _bag(self, entries: Sequence[_Token]) -> list[int]:
        buckets = self.bag_buckets
        if not buckets:
            return []
        crc32 = zlib.crc32
        bag = [e.unigram for e in entries]
        bag += [1 + crc32(b.bigram_tail, a.bigram_state) % buckets for a, b in itertools.pairwise(entries)]
        return bag

    def encode(self, text: str) -> Encoded:
        return self.encode_tokens(tokenize(text, self.config))

    def encode_tokens(self, tokens: Sequence[str]) -> Encoded:
        """`encode` for text already split by `tokenize`, for callers that need the tokens too."""
        # An utterance with no tokens (only spaces or control characters) is
        # read as one unknown word, so the network always sees a sequence.
        tokens = tokens or [UNK]
        cache = self._cache
        entries = [cache.get(t) or self._token(t) for t in tokens]
        return Encoded([e.word for e in entries], [e.ngrams for e in entries], self._bag(entries))
