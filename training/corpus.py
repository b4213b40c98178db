"""A corpus of unlabelled messages and its sentence embeddings by a teacher, cached in chunks.

Encoding a quarter of a million messages takes about an hour on two cores, so the
embeddings are written chunk by chunk under the cache directory, keyed by the corpus's
and the encoder's checksums: an interrupted run resumes where it stopped, and a
second build (or training's transfer set) reads them back.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.pretrained import SentenceEncoder
from training.vectors import cache_dir

CHUNK = 4096
MAX_LINE = 1000


def read_corpus(path: str | Path, limit: int | None = None) -> list[str]:
    """One message a line, blank lines skipped, each cut to `MAX_LINE` characters; duplicates kept once."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"corpus {source} is not a file (one message a line)")
    seen: dict[str, None] = {}
    with open(source, encoding="utf-8", errors="replace") as f:
        for line in f:
            text = line.strip()[:MAX_LINE]
            if text:
                seen.setdefault(text)
                if limit is not None and len(seen) >= limit:
                    break
    if not seen:
        raise ValueError(f"corpus {source} has no text")
    return list(seen)


def corpus_checksum(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def embeddings_dir(texts: list[str], encoder: SentenceEncoder) -> Path:
    corpus, weights = corpus_checksum(texts), encoder.checksum
    key = corpus.removeprefix("sha256:")[:16] + "-" + weights.removeprefix("sha256:")[:16]
    return cache_dir().parent / "corpus" / key


def embed_corpus(
    texts: list[str],
    encoder: SentenceEncoder,
    folder: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> np.ndarray:
    """The teacher's unit-length embeddings of `texts` [len(texts), dim] float16, cached chunk by chunk."""
    out_dir = folder or embeddings_dir(texts, encoder)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = []
    started = time.monotonic()
    for start in range(0, len(texts), CHUNK):
        path = out_dir / f"{start // CHUNK:05d}.npy"
        part = texts[start : start + CHUNK]
        matrix = _load_chunk(path, len(part))
        if matrix is None:
            # The model, not SentenceEncoder.encode: its per-text cache would hold the whole corpus.
            vectors = encoder.model.encode(
                part, batch_size=128, normalize_embeddings=True, show_progress_bar=False
            )
            matrix = np.asarray(vectors, dtype=np.float16)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, matrix)
            os.replace(tmp, path)
        chunks.append(matrix)
        if progress:
            progress(min(start + CHUNK, len(texts)), len(texts), time.monotonic() - started)
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float16)


def _load_chunk(path: Path, rows: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # damaged: encoded again
    return matrix if matrix.ndim == 2 and len(matrix) == rows else None
