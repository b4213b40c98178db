"""All service settings in one typed place, read from `INTENTLY_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.model_store import ModelStore, open_store


def default_home() -> Path:
    """Where Intently keeps its model store unless told otherwise (XDG data directory)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "intently"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTENTLY_", protected_namespaces=())

    model_dir: Path | None = Field(
        None, description="Serve this model directory as is (no store, no hot swap, no retraining)."
    )
    model_store: Path = Field(
        default_factory=lambda: default_home() / "store",
        description="Model store: every version and the active pointer; with a database URL, only this"
        " replica's local cache of the versions it has loaded.",
    )
    database_url: SecretStr | None = Field(
        None,
        description="postgresql://user:pass@host:5432/db: the model store and the job queue live in"
        " PostgreSQL, shared by every replica (docs/deployment.md); without it, the local directory.",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    workers: int = Field(1, ge=1, le=64, description="Worker processes.")
    root_path: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="Path prefix a proxy serves the app under, e.g. /intently (uvicorn's --root-path): the"
        " OpenAPI page and the playground's links and requests carry it; empty: served at /.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="'json' for one JSON object per line.")
    max_text_chars: int = Field(1000, ge=1, description="Longest accepted utterance, in characters.")
    max_batch: int = Field(256, ge=1, description="Most texts in one batch request.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body, in bytes.")
    max_top_k: int = Field(100, ge=1, description="Largest accepted top_k.")
    reload_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between checks of the store's active version."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for the admin API; the admin API is off without it."
    )
    rasa_token: SecretStr | None = Field(
        None,
        description="Token Rasa's endpoints (/model/parse, /status) want as ?token=, as Rasa's --auth-token;"
        " open without it.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (JSON list); none by default."
    )
    batch_max_size: int = Field(
        64, ge=1, le=1024, description="Micro-batching: most requests run in one forward pass."
    )
    batch_max_wait_ms: float = Field(
        2.0, ge=0, le=100, description="Micro-batching: longest a request waits for company; 0 turns it off."
    )
    quantize: bool = Field(
        True,
        description="Serve the model with its lookup tables in half precision (half their memory, the same"
        " answers to about 1e-3; docs/BENCHMARKS.md); false keeps them in fp32.",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Torch threads of a worker that trains the built-in model at a first start (serving"
        " itself runs no torch); default 1.",
    )
    public_examples: bool = Field(
        False,
        description="Serve training utterances (intent examples, evaluation examples) without the admin "
        "token; off by default because training data may hold real users' words.",
    )
    max_upload_bytes: int = Field(20 * 1_048_576, ge=1024, description="Largest training data upload.")
    max_train_examples: int = Field(200_000, ge=10, description="Most examples in one training job.")
    review: bool = Field(
        False,
        description="The review inbox: keep the requests the model was unsure of (and a random sample) for"
        " an admin to label and retrain on (docs/lifecycle.md). Off by default: it keeps users' words.",
    )
    review_sample_rate: float = Field(
        0.01, ge=0, le=1, description="Review inbox: share of all requests kept at random (live accuracy)."
    )
    review_max_items: int = Field(
        10_000, ge=1, description="Review inbox: most items kept; the oldest unlabelled go first."
    )
    review_max_age_days: float = Field(
        30.0, gt=0, description="Review inbox: an item not seen for this many days is deleted."
    )
    review_queue_size: int = Field(
        10_000,
        ge=1,
        description="Review inbox: requests waiting to be written, per worker; beyond it they are dropped"
        " (counted), never the request.",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_store(settings: Settings) -> ModelStore:
    """The model store the settings name: PostgreSQL with a database URL, else the directory."""
    url = settings.database_url.get_secret_value() if settings.database_url else None
    return open_store(settings.model_store, url or None)


# How the app is served; bench/bare_app.py serves its baseline with the very same
# options (kept here, not in app.cli, so that it need not import torch to read them).
# Logging is ours (app/logs.py, with request ids), so uvicorn's own config and access log are off;
# after SIGTERM requests in flight get 30 s to finish.
class UvicornOptions(TypedDict):
    """The keyword arguments of `uvicorn.run` set here, typed so that the call is checked."""

    factory: bool
    log_config: dict[str, Any] | None
    access_log: bool
    timeout_graceful_shutdown: int
    timeout_worker_healthcheck: int


UVICORN_OPTIONS: UvicornOptions = {
    "factory": True,
    "log_config": None,
    "access_log": False,
    "timeout_graceful_shutdown": 30,
    # uvicorn kills a worker that misses a 5 s health ping; a worker loading a model on a busy
    # machine can, and would be killed and restarted without end. A hung one still goes.
    "timeout_worker_healthcheck": 60,
}
