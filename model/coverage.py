"""The share of an utterance's words the model has seen: out-of-domain input is mostly new words.

A softmax shares all its mass among the known intents, so a music request
sent to a banking model still gets 0.6 on some banking intent; but most of
its words never occurred in the banking training text. The predictor also
rejects an utterance whose top probability times this share falls under a
second threshold, which training picks on validation rows with the same
budget rule as the first (training/calibration.py).

A word one typo away from a vocabulary word of four or more letters counts
as seen, so misspellings ("wether") do not read as new words. Numbers,
punctuation and emoji are left out of the share: they say nothing about
the domain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Shorter words are too often one edit from an unrelated word ("the", "thy"); longer ones miss typos.
MIN_FUZZY_LETTERS = 4
# Real words are short; a long token (untrusted input) is not expanded into its deletions.
MAX_FUZZY_LETTERS = 32


# An odd 64-bit multiplier: strings hash as polynomials in it, modulo 2^64 (numpy's uint64 wraps).
_BASE = np.uint64(0x100000001B3)


def _hashes(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """For words of one length L: each word's hash [n], and the hashes of the word with letter i
    dropped [n, L], all in a few array operations: hash(s) = sum of s[j] * BASE^(len(s)-1-j),
    so dropping letter i gives prefix(i) * BASE^(L-1-i) + suffix(i+1)."""
    n, length = len(words), len(words[0])
    codes = np.frombuffer("".join(words).encode("utf-32-le"), dtype=np.uint32).reshape(n, length)
    codes = codes.astype(np.uint64)
    powers = np.ones(length + 1, dtype=np.uint64)  # BASE^0 .. BASE^L
    powers[1:] = np.cumprod(np.full(length, _BASE, dtype=np.uint64))
    prefix = np.zeros((n, length + 1), dtype=np.uint64)  # prefix[:, i]: the hash of word[:i]
    suffix = np.zeros((n, length + 1), dtype=np.uint64)  # suffix[:, i]: word[i:]'s terms, as in the word
    for i in range(length):
        prefix[:, i + 1] = prefix[:, i] * _BASE + codes[:, i]
    for i in reversed(range(length)):
        suffix[:, i] = codes[:, i] * powers[length - 1 - i] + suffix[:, i + 1]
    dropped = prefix[:, :length] * powers[length - 1 :: -1][None, :length] + suffix[:, 1:]
    return prefix[:, length], dropped


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def is_word(token: str) -> bool:
    return any(map(str.isalpha, token)) and not any(map(str.isdigit, token))


class WordCoverage:
    """Known-word share of a token list, from a vocabulary built on the training text."""

    def __init__(self, vocab: Iterable[str]):
        vocab = list(vocab)
        self.known = {w for w in vocab if is_word(w)}
        long_words = [w for w in self.known if MIN_FUZZY_LETTERS <= len(w) <= MAX_FUZZY_LETTERS]
        self.long_words = set(long_words)
        # A vocabulary word with one letter dropped: SymSpell's trick for edit distance 1
        # (a dropped, added or changed letter, or two swapped) with lookups only. Kept as the
        # sorted hashes of those strings: some 120,000 of them cost 10 MB as a set of strings in
        # every worker, 1 MB so (a 64-bit hash: a false match is one in 10^14 a lookup).
        by_length: dict[int, list[str]] = {}
        for word in long_words:
            by_length.setdefault(len(word), []).append(word)
        parts = [_hashes(group)[1].ravel() for group in by_length.values()]
        self.deleted = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)
        # Token -> seen word (True), unseen word (False), not a word (None): one dict
        # lookup a token on the request path. Vocabulary tokens are judged up front.
        self._status: dict[str, bool | None] = {t: (True if t in self.known else None) for t in vocab}
        # Bounded in count and in size (short tokens only): request text is untrusted.
        self._limit = len(self._status) + 50_000

    def seen(self, word: str) -> bool:
        if word in self.known:
            return True
        if not MIN_FUZZY_LETTERS - 1 <= len(word) <= MAX_FUZZY_LETTERS:
            return False
        if not _deletions(word).isdisjoint(self.long_words):
            return True
        if not len(self.deleted):
            return False
        # The word itself, or it with a letter dropped, is a vocabulary word with one dropped.
        whole, dropped = _hashes([word])
        hashes = np.concatenate([whole, dropped[0]])
        at = np.minimum(np.searchsorted(self.deleted, hashes), len(self.deleted) - 1)
        return bool((self.deleted[at] == hashes).any())

    def share(self, tokens: Sequence[str]) -> float:
        """Seen words / words; 1.0 when the utterance has no words at all (nothing to judge)."""
        status = self._status
        words = seen = 0
        for token in tokens:
            if token in status:
                state = status[token]
            else:
                state = self.seen(token) if is_word(token) else None
                if len(token) <= MAX_FUZZY_LETTERS and len(status) < self._limit:
                    status[token] = state
            if state is not None:
                words += 1
                seen += state
        return seen / words if words else 1.0
