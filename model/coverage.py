"""The share of an utterance's words the model has seen: out-of-domain input is mostly new words.

A softmax shares all its mass among the known intents, so a music request
sent to a banking model still gets 0.6 on some banking intent; but most of
its words never occurred in the banking training text. The predictor also
rejects an utterance whose top probability times this share falls under a
second threshold, which training picks on validation rows with the same
budget rule as the first (training/calibration.py).

A word one typo away from a vocabulary word of five or more letters counts
as seen, so misspellings ("wether") do not read as new words. Numbers,
punctuation and emoji are left out of the share: they say nothing about
the domain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Shorter words are too often one edit from an unrelated word ("hear", "near").
MIN_FUZZY_LETTERS = 5
# Real words are short; a long token (untrusted input) is not expanded into its deletions.
MAX_FUZZY_LETTERS = 32


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def is_word(token: str) -> bool:
    return any(ch.isalpha() for ch in token) and not any(ch.isdigit() for ch in token)


class WordCoverage:
    """Known-word share of a token list, from a vocabulary built on the training text."""

    def __init__(self, vocab: Iterable[str]):
        self.known = {w for w in vocab if is_word(w)}
        long_words = [w for w in self.known if MIN_FUZZY_LETTERS <= len(w) <= MAX_FUZZY_LETTERS]
        self.long_words = set(long_words)
        # A vocabulary word with one letter dropped: SymSpell's trick for edit distance 1
        # (a dropped, added or changed letter, or two swapped) with set lookups only.
        self.deleted = set().union(*map(_deletions, long_words)) if long_words else set()
        self._cache: dict[str, bool] = {}

    def seen(self, word: str) -> bool:
        if word in self.known:
            return True
        hit = self._cache.get(word)
        if hit is None:
            hit = False
            if MIN_FUZZY_LETTERS - 1 <= len(word) <= MAX_FUZZY_LETTERS:
                long_words, deleted = self.long_words, self.deleted
                hit = word in deleted or any(v in long_words or v in deleted for v in _deletions(word))
            if len(self._cache) < 50_000:  # bounded: request text is untrusted
                self._cache[word] = hit
        return hit

    def share(self, tokens: Sequence[str]) -> float:
        """Seen words / words; 1.0 when the utterance has no words at all (nothing to judge)."""
        words = [t for t in tokens if is_word(t)]
        if not words:
            return 1.0
        return sum(map(self.seen, words)) / len(words)
