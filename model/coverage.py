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
        hashes = (hash(word[:i] + word[i + 1 :]) for word in long_words for i in range(len(word)))
        self.deleted = np.unique(np.fromiter(hashes, dtype=np.int64))
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
        variants = _deletions(word)
        if not variants.isdisjoint(self.long_words):
            return True
        return self._deleted_any([word, *variants])

    def _deleted_any(self, words: Sequence[str]) -> bool:
        """Whether any of `words` is a vocabulary word with one letter dropped."""
        if not len(self.deleted):
            return False
        hashes = np.array([hash(w) for w in words], dtype=np.int64)
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
