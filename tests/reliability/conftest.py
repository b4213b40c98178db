"""Fixtures of the reliability suite: a tiny model store that trains in seconds, and admin auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.directory import DirectoryStore
from tests.conftest import private_copy, small_config
from tests.support.workers import once_per_run
from training.readers import Example
from training.train import train

TOKEN = "reliability-admin-token-7f3a9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Four intents, none of them `ask_time`: the OpenAPI example job (one `ask_time` example)
# must be refused at once rather than start a real training run during fuzzing.
TINY_DATA = {
    "greet": ["hello", "hi there", "good morning", "hey", "hello friend", "hi", "greetings", "howdy"],
    "goodbye": [
        "bye",
        "see you later",
        "goodbye",
        "farewell",
        "bye bye",
        "see ya",
        "catch you later",
        "later",
    ],
    "lights_on": [
        "turn on the lights",
        "lights on",
        "switch the light on",
        "make it bright",
        "light up the room",
        "turn the lamp on",
        "put the lights on",
        "brighten the room",
    ],
    "play_music": [
        "play some music",
        "put on a song",
        "play jazz",
        "start the playlist",
        "music please",
        "play my favourite song",
        "some tunes",
        "play the radio",
    ],
}


def tiny_examples() -> list[Example]:
    return [Example(t, intent) for intent, texts in TINY_DATA.items() for t in texts]


@pytest.fixture(scope="session")
def tiny_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose one active version is a tiny model: retraining it takes seconds."""
    root = tmp_path_factory.mktemp("tiny-store") / "store"
    store = DirectoryStore(root)
    config = small_config(embed_dim=16, hidden_dim=16, ngram_buckets=1000, bag_buckets=1000, epochs=3)
    result = once_per_run(tmp_path_factory, "tiny-result", lambda: train(tiny_examples(), config))
    version = store.add(result.net, result.meta, tiny_examples(), result.valid_examples)
    store.activate(version)
    return root


@pytest.fixture
def tiny_store(tiny_store_template: Path, tmp_path: Path) -> Path:
    return private_copy(tiny_store_template, tmp_path / "tiny-store")
