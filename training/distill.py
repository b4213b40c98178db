"""Distillation: a sentence-encoder teacher labels augmented utterances for the recurrent student.

The teacher is a logistic regression over a pretrained encoder's sentence
embeddings and TF-IDF n-grams, fitted on the team's own examples. Augmented utterances are made as in
Tang et al. (2019), "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks": words masked, words replaced by a near neighbour in the vector space,
and n-gram windows cut out of the utterance. The student learns the teacher's
probabilities on all of them, so it inherits what the encoder knows of sentences
the team never wrote. Only the student is saved.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.tokenizer import UNK
from training.pretrained import SentenceEncoder

# Tang et al.'s probabilities: mask a word, swap it for a neighbour, cut an n-gram window.
P_MASK = 0.1
P_SWAP = 0.1
P_NGRAM = 0.25
MAX_NGRAM = 5


# The TF-IDF features' weight beside the unit-length sentence embedding.
TFIDF_WEIGHT = 0.5


@dataclass
class Teacher:
    """A logistic regression over a sentence embedding and TF-IDF word and character n-grams.

    The embedding brings what the encoder knows of the language; the n-grams bring
    the names and phrasings particular to the team's data, which a general encoder
    blurs. Together they beat either alone at every size measured (docs/RESEARCH.md).
    """

    encoder: SentenceEncoder
    tfidf: Any  # a fitted sklearn FeatureUnion
    classifier: Any  # a fitted sklearn LogisticRegression
    num_labels: int

    def _features(self, texts: Sequence[str]) -> Any:
        from scipy.sparse import csr_matrix, hstack

        return hstack(
            [csr_matrix(self.encoder.encode(texts)), TFIDF_WEIGHT * self.tfidf.transform(texts)]
        ).tocsr()

    def probabilities(self, texts: Sequence[str], batch_size: int = 4096) -> np.ndarray:
        """[len(texts), num_labels]; classes the teacher never saw get 0."""
        out = np.zeros((len(texts), self.num_labels), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = self.classifier.predict_proba(self._features(texts[start : start + batch_size]))
            out[start : start + len(chunk), self.classifier.classes_] = chunk
        return out


def tfidf_features() -> Any:
    """TF-IDF of word 1-2 grams and character 2-5 grams: the baseline's features, and half the teacher's."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        ]
    )


def fit_teacher(
    encoder: SentenceEncoder, texts: Sequence[str], labels: Sequence[int], num_labels: int, c: float
) -> Teacher:
    """The teacher on the labelled rows."""
    from sklearn.linear_model import LogisticRegression

    tfidf = tfidf_features().fit(texts)
    teacher = Teacher(encoder, tfidf, LogisticRegression(C=c, max_iter=3000), num_labels)
    teacher.classifier.fit(teacher._features(texts), np.asarray(labels))
    return teacher


def neighbours(
    words: Sequence[str], matrix: np.ndarray, among: int, k: int = 8, min_similarity: float = 0.6
) -> dict[str, list[str]]:
    """The `k` nearest words by cosine of each of the first `among` words (those seen in training)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.maximum(norms, 1e-8)
    alpha = np.array([w.isalpha() for w in words])
    out: dict[str, list[str]] = {}
    for start in range(0, among, 1024):
        rows = unit[start : min(start + 1024, among)]
        sims = rows @ unit.T
        sims[:, ~alpha] = -1.0
        sims[np.arange(len(rows)), np.arange(start, start + len(rows))] = -1.0
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        for r, cand in enumerate(top):
            word = words[start + r]
            if not word.isalpha() or norms[start + r] == 0:
                continue
            good = [int(j) for j in cand[np.argsort(-sims[r, cand])] if sims[r, j] >= min_similarity]
            if good:
                out[word] = [words[j] for j in good]
    return out


def augment(tokens: Sequence[str], near: dict[str, list[str]], rng: random.Random) -> list[str]:
    """One augmented copy of a token list; masked words are `<unk>`."""
    out = []
    for tok in tokens:
        roll = rng.random()
        if roll < P_MASK:
            out.append(UNK)
        elif roll < P_MASK + P_SWAP and tok in near:
            out.append(rng.choice(near[tok]))
        else:
            out.append(tok)
    if len(out) > 2 and rng.random() < P_NGRAM:
        n = rng.randint(1, min(MAX_NGRAM, len(out) - 1))
        start = rng.randrange(len(out) - n + 1)
        out = out[start : start + n]
    return out


def augmented_rows(
    token_lists: Sequence[Sequence[str]], near: dict[str, list[str]], copies: int, seed: int
) -> list[list[str]]:
    """Up to `copies` distinct new token lists per utterance, none equal to an original."""
    rng = random.Random(seed)
    seen = {tuple(t) for t in token_lists}
    out: list[list[str]] = []
    for tokens in token_lists:
        made = 0
        for _ in range(copies * 2):  # a short utterance has few distinct variants
            new = augment(tokens, near, rng)
            key = tuple(new)
            if key in seen or all(t == UNK for t in new):
                continue
            seen.add(key)
            out.append(new)
            made += 1
            if made == copies:
                break
    return out


def teacher_text(tokens: Sequence[str], mask_token: str) -> str:
    """The teacher reads the augmented utterance as text, with its own mask token for `<unk>`."""
    return " ".join(mask_token if t == UNK else t for t in tokens)
