"""The review inbox in the playground, in headless Chromium against the real server: label three
live requests from the keyboard, train with them, and see the new version answer one of them right;
the operating point on the evaluation's curve, and measured live."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import TOKEN, Console, _serve
from tests.browser.test_playground import FAST, _type
from tests.ci import missing_part
from tests.conftest import Server

if importlib.util.find_spec("playwright") is None:
    missing_part("browser tests need playwright (pip install -e '.[test]')")
from playwright.sync_api import expect

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FOOD = ["order me a pizza", "have a pizza delivered to my house", "food delivery please"]
OTHER = ["colorless green ideas sleep furiously", "What time is it?", "play some jazz"]


@pytest.fixture(scope="module")
def review_site(
    browser: Any, small_store_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The small model's store with the inbox on, keeping every request (a sample rate of 1)."""
    env = {"INTENTLY_REVIEW": "true", "INTENTLY_REVIEW_SAMPLE_RATE": "1"}
    yield from _serve(small_store_template, tmp_path_factory.mktemp("browser-review"), env)


def _selected(p: Any) -> str:
    return str(p.locator('#inbox-list [aria-selected="true"] .inbox-text').inner_text())


def _go_to(p: Any, text: str) -> None:
    """Move the selection to `text` with j and k only."""
    texts = p.locator("#inbox-list [role=option] .inbox-text").all_inner_texts()
    steps = texts.index(text) - texts.index(_selected(p))
    for _ in range(abs(steps)):
        p.keyboard.press("j" if steps > 0 else "k")
    expect(p.locator('#inbox-list [aria-selected="true"] .inbox-text')).to_have_text(text)


def test_label_three_from_the_keyboard_train_and_see_one_answered_right(
    page: tuple[Any, Console], review_site: Server
) -> None:
    p, console = page
    url = review_site.url
    for text in FOOD + OTHER:
        assert httpx.post(f"{url}/v1/classify", json={"text": text}).status_code == 200
    deadline = time.monotonic() + 15
    while len(httpx.get(f"{url}/v1/review", headers=AUTH).json()["items"]) < len(FOOD + OTHER):
        assert time.monotonic() < deadline, "the requests did not reach the inbox"
        time.sleep(0.2)
    before = {t: httpx.post(f"{url}/v1/classify", json={"text": t}).json()["intent"] for t in FOOD}
    assert "order_food" not in before.values()  # an intent the model does not have yet

    p.goto(url)
    p.get_by_label("Admin token").fill(TOKEN)
    p.get_by_label("Admin token").press("Enter")
    listbox = p.get_by_role("listbox", name="Review items")
    expect(listbox.get_by_role("option")).to_have_count(len(FOOD + OTHER))
    # Grouped by the model's intent, each item with the model's top three.
    groups = listbox.get_by_role("group")
    expect(groups.first.locator("h4")).to_have_text(re.compile(r"^\S+ \(\d+\)$"))
    expect(listbox.get_by_role("option").first.locator(".inbox-top span")).to_have_count(3)
    expect(p.locator("#inbox-accuracy")).to_contain_text("Label random-sample items")
    expect(p.get_by_role("button", name=re.compile("^Train with these"))).to_be_disabled()

    # One key each: n and a typed name for the first (a new intent), "." (the same again) for the others.
    listbox.focus()
    _go_to(p, FOOD[0])
    p.keyboard.press("n")
    expect(p.get_by_label("Label as (an intent, a new intent, or oos)")).to_be_focused()
    p.keyboard.type("order_food")
    p.keyboard.press("Enter")
    expect(listbox).to_be_focused()
    for i, text in enumerate(FOOD):
        if i:
            _go_to(p, text)
            p.keyboard.press(".")
        option = listbox.get_by_role("option").filter(has_text=text)
        expect(option.locator(".label-tag")).to_have_text("→ order_food")  # saved, and the list redrawn
    labelled = httpx.get(f"{url}/v1/review?status=labelled", headers=AUTH).json()["items"]
    assert sorted((i["text"], i["label"]) for i in labelled) == sorted((t, "order_food") for t in FOOD)
    # Every item is in the random sample: three labelled against the model's answers, all of them wrong.
    expect(p.locator("#inbox-accuracy")).to_contain_text("from 3 labelled random-sample items")
    expect(p.locator("#inbox-accuracy")).to_contain_text("Estimated live accuracy 0.0%")

    # The operating point: the held-out curve with the model's own point, and (once an unknown
    # request is labelled `oos`, key o) the live point beside it.
    expect(p.locator("#operating-text")).to_contain_text("catches")
    expect(p.locator("#operating-curve polyline")).to_have_count(1)
    expect(p.locator("#operating-current")).to_have_count(1)
    expect(p.locator("#operating-live")).to_have_count(0)
    _go_to(p, OTHER[0])
    p.keyboard.press("o")
    nonsense = listbox.get_by_role("option").filter(has_text=OTHER[0])
    expect(nonsense.locator(".label-tag")).to_have_text("→ oos")
    expect(p.locator("#inbox-accuracy")).to_contain_text("Live, as served:")
    expect(p.locator("#operating-live")).to_have_count(1)

    # Train with them: the activation and options of the training form.
    p.get_by_label("Activation").select_option("always")
    p.get_by_text("Training options").click()
    p.get_by_label(re.compile("^Options as a JSON object")).fill(json.dumps(FAST))
    train = p.get_by_role("button", name="Train with these (4 labelled)")
    train.click()
    expect(p.locator("#inbox-status")).to_contain_text("with 4 labelled items")
    expect(p.locator("#job-state")).to_contain_text(re.compile(r"Training: epoch \d+ of 20"), timeout=60_000)
    expect(p.locator("#job")).to_have_attribute("data-state", "succeeded", timeout=300_000)
    (job,) = httpx.get(f"{url}/v1/training-jobs", headers=AUTH).json()["jobs"]
    version = job["version"]
    assert job["activated"] and job["examples"] == 4
    expect(p.locator("#model-line")).to_contain_text(version)  # the page waits for the swap (~1 s)
    # Trained on: out of the list, counted as used.
    expect(listbox.get_by_role("option")).to_have_count(len(OTHER) - 1)
    expect(p.locator("#inbox-accuracy")).to_contain_text("4 trained on")

    after = {t: httpx.post(f"{url}/v1/classify", json={"text": t}).json() for t in FOOD}
    right = [t for t, a in after.items() if a["intent"] == "order_food" and a["model_version"] == version]
    assert right, f"the new version answers none of the three as labelled: {after}"
    _type(p, right[0])
    expect(p.locator("#ranking li").first.locator(".bar-label")).to_have_text("order_food")
    assert console.violations() == []
