"""The model artifact: a directory with `weights.safetensors` and `model.json`.

A model directory is untrusted input (it may come from a shared volume or a
download), so loading never unpickles anything, checks every field of the
metadata, and compares tensor shapes from the safetensors header before any
tensor is read into memory.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from model.config import ModelConfig, TokenizerConfig, tokenizer_config_from_dict
from model.detector import DetectorParams
from model.entities import Kind
from model.runtime import HasWeights, expected_shapes
from model.tokenizer import Tokenizer

FORMAT = "intently-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "model.json"

# Bounds that no real intent model comes near; past them a file is corrupt or hostile.
MAX_META_BYTES = 64 * 1024 * 1024
MAX_VOCAB = 2_000_000
MAX_LABELS = 10_000
MAX_DIM = 8192
MAX_LAYERS = 8
MAX_BUCKETS = 4_000_000
MAX_DETECTOR_ROWS = 1_000_000
MAX_PARAMETERS = 300_000_000  # generous: the wide tables grow with buckets x intents


class ArtifactError(ValueError):
    """The directory is not a loadable Intently model; the message says why."""


# Keys model.json must have (the rest have defaults: artifacts from before them load).
_REQUIRED = ("model", "tokenizer", "vocab", "labels", "threshold", "temperature", "version")
# Written only when set, so that a model without them still loads in releases from before them.
_WHEN_SET = (
    "coverage_threshold",
    "detector",
    "entity_types",
    "entity_synonyms",
    "entity_roles",
    "entity_regexes",
    "entity_lookups",
    "responses",
)


@dataclass(config=ConfigDict(arbitrary_types_allowed=True))
class ModelMeta:
    """Everything in `model.json` besides the weights: the one schema the file is read and written by.

    Reading validates every field (`parse_meta`): a model directory is untrusted input.
    """

    model: ModelConfig
    tokenizer: TokenizerConfig
    vocab: list[str]
    labels: list[str]
    oos_label: str | None = "oos"
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    temperature: Annotated[float, Field(ge=0.01, le=100.0)] = 1.0
    # Out of scope also when the top probability times the share of known words
    # (model/coverage.py) is under this. 0 (off) for artifacts from before it existed.
    coverage_threshold: Annotated[float, Field(strict=True, ge=0.0, le=1.0)] = 0.0
    # The unknown-intent detector's standardisation and threshold (model/detector.py);
    # None for models without one, the ones from before it existed included.
    detector: DetectorParams | None = None
    # The entity types the tagger names, in tag order (model/entities.py); empty without one.
    entity_types: list[str] = field(default_factory=list)
    # An entity's value when its text is one of these (case-folded), as in the training data's
    # `[NYC](city:New York)`: Rasa's synonyms.
    entity_synonyms: dict[str, str] = field(default_factory=dict)
    # [role, group] of each of `entity_types` (a type with roles is a tag type a role); empty
    # when no annotation had one.
    entity_roles: list[list[str | None]] = field(default_factory=list)
    # Rasa's `regex:` and `lookup:` items, by entity type, matched when served (model/patterns.py).
    entity_regexes: dict[str, list[str]] = field(default_factory=dict)
    entity_lookups: dict[str, list[str]] = field(default_factory=dict)
    # The responses of retrieval intents (`utter_chitchat/ask_name`), given back as Rasa's
    # response selector gives them.
    responses: dict[str, list[Any]] = field(default_factory=dict)
    version: str = field(default_factory=lambda: new_version_id())
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    data: dict[str, Any] = field(default_factory=dict)  # checksum, size, per-intent counts
    metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics
    training: dict[str, Any] = field(default_factory=dict)  # options, seed, time taken

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value: Any) -> ModelConfig:
        if isinstance(value, ModelConfig):
            return value
        if not isinstance(value, dict):
            raise ValueError("'model' must be an object")
        return ModelConfig.from_dict(value)

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer(cls, value: Any) -> TokenizerConfig:
        if isinstance(value, TokenizerConfig):
            return value
        if not isinstance(value, dict):
            raise ValueError("'tokenizer' must be an object")
        return tokenizer_config_from_dict(value)

    @field_validator("detector", mode="before")
    @classmethod
    def _detector(cls, value: Any) -> DetectorParams | None:
        if value is None or isinstance(value, DetectorParams):
            return value
        return DetectorParams.from_dict(value)

    @field_validator("data", "metrics", "training", mode="before")
    @classmethod
    def _facts(cls, value: Any) -> Any:
        return value or {}

    @field_validator("entity_regexes")
    @classmethod
    def _patterns(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for pattern in (p for items in value.values() for p in items):
            try:
                re.compile(pattern)
            except re.error as exc:
                problem = f"{pattern[:60]!r} is not a valid pattern ({exc})"
                raise ValueError(f"'entity_regexes': {problem}") from None
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str:
        version = str(value)
        if not version or len(version) > 128 or not all(c.isalnum() or c in "-_." for c in version):
            raise ValueError("'version' must be a short safe name")
        return version

    @field_validator("created_at", mode="before")
    @classmethod
    def _created_at(cls, value: Any) -> str:
        return str(value)

    @model_validator(mode="after")
    def _consistent(self) -> ModelMeta:
        cfg = self.model
        check_bounds(cfg, self.tokenizer)
        if len(self.vocab) != cfg.vocab_size:
            raise ValueError("'vocab' must be a list of vocab_size strings")
        if len(self.labels) != cfg.num_labels or len(set(self.labels)) != len(self.labels):
            raise ValueError("'labels' must be num_labels distinct strings")
        if (self.detector is None) != (cfg.detector_rows == 0):
            raise ValueError("'detector' and model.detector_rows must be given together")
        roles = self.entity_roles
        if roles and (len(roles) != len(self.entity_types) or any(len(r) != 2 for r in roles)):
            raise ValueError("'entity_roles' must give [role, group] (strings or null) for each entity type")
        kinds = self.entity_kinds
        if len(set(kinds)) != len(kinds):
            raise ValueError("'entity_types' (with their roles) must be distinct")
        if (1 + 2 * len(self.entity_types) if self.entity_types else 0) != cfg.entity_tags:
            raise ValueError("'entity_types' and model.entity_tags must agree (1 + 2 tags a type)")
        return self

    @property
    def entity_kinds(self) -> list[Kind]:
        """The tagger's tag types as (entity, role, group), in tag order."""
        roles = self.entity_roles or [[None, None]] * len(self.entity_types)
        return [(e, r, g) for e, (r, g) in zip(self.entity_types, roles, strict=True)]

    @property
    def trained_vocab(self) -> list[str]:
        """The words seen in training: the vocabulary without the words only the vectors brought."""
        return self.vocab[: self.model.learned_rows]

    def to_dict(self, with_vocab: bool = True) -> dict[str, Any]:
        fields = _ADAPTER.dump_python(self, mode="json")
        out: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        out |= {k: v for k, v in fields.items() if v or k not in _WHEN_SET}
        out["model"] = self.model.to_dict()
        if self.detector is not None:
            out["detector"] = self.detector.to_dict()
        if not with_vocab:
            del out["vocab"]
        return out


_ADAPTER: TypeAdapter[ModelMeta] = TypeAdapter(ModelMeta)


def new_version_id() -> str:
    """Sortable by creation time, unique, and safe as a directory name."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def save(
    net: HasWeights,
    meta: ModelMeta,
    out_dir: str | Path,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write the artifact to a temporary sibling, then rename it into place.

    A crash at any point leaves either the old directory or the complete new
    one, never a half-written model that a server could pick up. Replacing an
    existing directory swaps the two in one step (`_replace_dir`), so `out_dir`
    is never missing either, except where the kernel cannot swap (see there).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _save_tensors(net.weights(), tmp / WEIGHTS_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta.to_dict(), ensure_ascii=False), encoding="utf-8")
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
        for name in (WEIGHTS_FILE, META_FILE, *(extra_files or {})):
            _fsync(tmp / name)
        os.chmod(tmp, 0o755)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _save_tensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    """safetensors' writer, its I/O failures raised as the OSError they are (a full disk is ENOSPC),
    so that every caller that handles a failed write handles this one too."""
    try:
        save_file(tensors, str(path), metadata={"format": FORMAT})
    except SafetensorError as exc:
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(path)) from exc


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _replace_dir(src: Path, dst: Path) -> None:
    if _exchange(src, dst):
        shutil.rmtree(src, ignore_errors=True)  # the old model, now at the temporary name
    elif not dst.exists():
        os.rename(src, dst)
    else:
        # No atomic swap here (not Linux, or a file system without it): a crash
        # between these two renames leaves only the old model, under `.old-`.
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:6]}")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dst.parent)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# errnos that mean "this kernel or file system cannot exchange", not "this exchange failed".
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


@functools.cache
def _renameat2() -> Any:
    """Linux's renameat2(2) from the C library, or None where there is none (macOS, old glibc)."""
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False when `b` is missing or swapping is unsupported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT or err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; some file systems cannot open a directory for this."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_meta(model_dir: str | Path) -> ModelMeta:
    """Parse and validate `model.json`, with a message that names the problem."""
    path = Path(model_dir)
    if not path.exists():
        raise ArtifactError(f"model directory not found: {path}")
    if not path.is_dir():
        raise ArtifactError(f"not a model directory (a file): {path}")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise ArtifactError(f"not an Intently model: {meta_path.name} missing in {path}")
    if meta_path.stat().st_size > MAX_META_BYTES:
        raise ArtifactError(f"{meta_path} is implausibly large")
    return parse_meta(meta_path.read_bytes(), str(meta_path))


def parse_meta(content: bytes, source: str) -> ModelMeta:
    """Validate the bytes of a `model.json` (read from `source`, named in every message)."""
    if len(content) > MAX_META_BYTES:
        raise ArtifactError(f"{source} is implausibly large")
    try:
        raw = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(f"{source} is not an Intently model description")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{source}: format version {raw.get('format_version')!r} is not supported "
            f"(this Intently reads version {FORMAT_VERSION})"
        )
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ArtifactError(f"{source} is invalid: {missing[0]!r} missing")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{source} is invalid: {_first_error(exc)}") from None
    except (TypeError, ValueError) as exc:  # raised by the configs' own checks
        raise ArtifactError(f"{source} is invalid: {exc}") from None


def _first_error(exc: ValidationError) -> str:
    """The first problem pydantic found, as one line naming the field."""
    error = exc.errors()[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return message if not where or where in message else f"'{where}': {message}"


def check_bounds(cfg: ModelConfig, tcfg: TokenizerConfig) -> None:
    """Sizes a loadable model stays within; training checks them too, before it starts."""
    limits = {
        "vocab_size": (cfg.vocab_size, MAX_VOCAB),
        "num_labels": (cfg.num_labels, MAX_LABELS),
        "embed_dim": (cfg.embed_dim, MAX_DIM),
        "hidden_dim": (cfg.hidden_dim, MAX_DIM),
        "num_layers": (cfg.num_layers, MAX_LAYERS),
        "ngram_buckets": (cfg.ngram_buckets, MAX_BUCKETS),
        "bag_buckets": (cfg.bag_buckets, MAX_BUCKETS),
        "vectors_dim": (cfg.vectors_dim, MAX_DIM),
        "detector_rows": (cfg.detector_rows, MAX_DETECTOR_ROWS),
        "entity_tags": (cfg.entity_tags, 1 + 2 * MAX_LABELS),
    }
    for name, (value, limit) in limits.items():
        if not 0 <= value <= limit:
            raise ValueError(f"{name}={value} is outside 0..{limit}")
    if tcfg.ngram_buckets != cfg.ngram_buckets:
        raise ValueError("tokenizer and model disagree on ngram_buckets")
    if not (1 <= tcfg.ngram_min <= tcfg.ngram_max <= 10 and 1 <= tcfg.max_tokens <= 4096):
        raise ValueError("tokenizer n-gram or length settings are out of range")
    wide = cfg.bag_buckets + (cfg.ngram_buckets if cfg.uses_char_bag else 0)
    params = (cfg.learned_rows + cfg.ngram_buckets) * cfg.embed_dim + wide * cfg.num_labels
    params += cfg.vocab_size * cfg.vectors_dim + cfg.detector_rows * 4 * cfg.hidden_dim
    if params > MAX_PARAMETERS:
        raise ValueError("model is implausibly large")


def load(model_dir: str | Path) -> tuple[dict[str, np.ndarray], ModelMeta, Tokenizer]:
    """The weights of a model directory as numpy arrays, checked against its `model.json`, its
    metadata and tokenizer; raises ArtifactError with a clear message. Torch-free: serving runs
    them in model/runtime.py; training/network.py's `load_net` rebuilds the torch network."""
    path = Path(model_dir)
    meta = read_meta(path)
    expected = expected_shapes(meta.model)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"not an Intently model: {WEIGHTS_FILE} missing in {path}")
    try:
        with safe_open(str(weights), framework="np") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            if found != expected:
                raise ArtifactError(_shape_mismatch(weights, expected, found))
            state: dict[str, np.ndarray] = {k: f.get_tensor(k) for k in expected}
    except ArtifactError:
        raise
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ArtifactError(f"{weights} is not a readable safetensors file: {exc}") from None
    for k, v in state.items():
        if not np.issubdtype(v.dtype, np.floating) or not np.isfinite(v).all():
            raise ArtifactError(f"{weights}: tensor {k} is not finite floating point")
    return state, meta, Tokenizer(meta.vocab, meta.tokenizer, meta.model.bag_buckets)


def _shape_mismatch(
    path: Path, expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]
) -> str:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    parts = []
    if missing:
        parts.append(f"missing tensors {missing[:3]}")
    if extra:
        parts.append(f"unexpected tensors {extra[:3]}")
    if wrong:
        k = wrong[0]
        parts.append(f"tensor {k} has shape {list(found[k])}, expected {list(expected[k])}")
    return f"{path} does not match model.json: " + "; ".join(parts)
