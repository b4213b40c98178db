"""Browser fixtures: one Chromium and one real server (small model, temp store) per module."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import DESKTOP, launch, missing
from tests.ci import missing_part
from tests.conftest import Server

TOKEN = "browser-test-token"
PREFIX = "/intently"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = missing()
    if reason:
        missing_part(f"browser tests need Chromium and Playwright: {reason}", part="chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


def _serve(template: Path, root: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`intently serve` on a private copy of a store, with the admin API on."""
    store = root / "store"
    shutil.copytree(template, store)
    server = Server(
        [],
        {"INTENTLY_MODEL_STORE": str(store), "INTENTLY_ADMIN_TOKEN": TOKEN, **(env or {})},
        log=root / "server.log",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def site(
    browser: Any, small_store_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The small model's store: intents only, no entities."""
    yield from _serve(small_store_template, tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def tagged_site(
    browser: Any, tagged_store_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The entity model's store; unquantized, so an answer does not depend on its micro-batch neighbours."""
    env = {"INTENTLY_QUANTIZE": "false"}
    yield from _serve(tagged_store_template, tmp_path_factory.mktemp("browser-tagged"), env)


@pytest.fixture(scope="module")
def prefixed_site(
    browser: Any, small_store_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The small model's store served for a proxy that mounts it under /intently."""
    env = {"INTENTLY_ROOT_PATH": PREFIX}
    yield from _serve(small_store_template, tmp_path_factory.mktemp("browser-prefixed"), env)


class Console:
    """What the page said on its console; Content-Security-Policy violations show up here."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def violations(self) -> list[str]:
        return [m for m in self.messages if "Content Security Policy" in m or "pageerror" in m]


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Console]]:
    """A fresh context (empty session storage) for every test."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(15_000)
    console = Console()
    page.on("console", lambda m: console.messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.messages.append(f"pageerror: {e}"))
    yield page, console
    context.close()
