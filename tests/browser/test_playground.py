"""The playground page in headless Chromium against the real server: what a person sees and does.

Elements are found by their accessible names (labels, roles), so these tests
also check that the page can be used without a mouse or without sight.
"""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import httpx

from tests.browser.chromium import PHONE
from tests.browser.conftest import PREFIX, TOKEN, Console
from tests.ci import missing_part
from tests.conftest import NEW_INTENT, NO_PRETRAINED, Server
from tests.support.prefix_proxy import prefix_proxy

if importlib.util.find_spec("playwright") is None:
    missing_part("browser tests need playwright (pip install -e '.[test]')")
from playwright.sync_api import expect

NONSENSE = "colorless green ideas sleep furiously"
# The small test model's shape, so that the job trains in seconds.
FAST = {
    "embed_dim": 64,
    "hidden_dim": 64,
    "ngram_buckets": 5000,
    "bag_buckets": 20000,
    "epochs": 20,
    "min_steps": 0,
    **NO_PRETRAINED,
}


def _type(page: Any, text: str) -> None:
    box = page.get_by_label("What might a user say?")
    box.fill("")
    box.press_sequentially(text, delay=20)


def test_classifies_as_you_type_and_marks_out_of_scope(page: tuple[Any, Console], site: Server) -> None:
    p, console = page
    requests: list[str] = []
    p.on("request", lambda r: requests.append(r.url) if r.url.endswith("/v1/classify") else None)
    p.goto(site.url)
    model = httpx.get(f"{site.url}/v1/model").json()
    expect(p.locator("#model-line")).to_contain_text(model["version"])

    _type(p, "What time is it?")
    ranking = p.get_by_role("list", name="Ranking")
    expect(ranking.locator("li").first.locator(".bar-label")).to_have_text("ask_time")
    expect(p.get_by_role("status").first).to_contain_text("ask_time")
    expect(p.locator("#verdict")).to_have_attribute("data-out-of-scope", "false")
    expect(p.locator("#entities-box")).to_be_hidden()  # a model without entities shows none
    assert len(requests) <= 3, f"not debounced: {len(requests)} requests for 16 keystrokes"
    # The bar and the percentage are the API's confidence.
    answer = httpx.post(f"{site.url}/v1/classify", json={"text": "What time is it?"}).json()
    expect(ranking.locator("li").first.locator(".bar-value")).to_have_text(
        f"{100 * answer['confidence']:.1f}%"
    )

    _type(p, NONSENSE)
    verdict = p.locator("#verdict")
    expect(verdict).to_have_attribute("data-out-of-scope", "true")
    expect(verdict).to_contain_text("Out of scope")
    expect(verdict).to_have_class(re.compile(r"\boos\b"))
    assert console.violations() == []


def test_intents_evaluation_and_phone_layout(page: tuple[Any, Console], site: Server) -> None:
    p, console = page
    p.goto(site.url)
    intents = httpx.get(f"{site.url}/v1/intents").json()["intents"]
    buttons = p.locator("#intents button.intent")
    expect(buttons).to_have_count(len(intents))
    # Examples are training data: private without the token, and the page says so.
    first = buttons.first
    first.click()
    expect(first).to_have_attribute("aria-expanded", "true")
    expect(p.locator("#examples-0")).to_contain_text("private")

    version = httpx.get(f"{site.url}/v1/model").json()["version"]
    report = httpx.get(f"{site.url}/v1/models/{version}/evaluation").json()
    expect(p.locator("#eval-f1 li")).to_have_count(len(report["per_intent"]))
    expect(p.locator("#eval-pairs tbody tr")).to_have_count(max(1, len(report["confused_pairs"])))
    image = p.get_by_role("img", name=re.compile("Confusion matrix"))
    expect(image).to_be_visible()
    p.wait_for_function("document.getElementById('confusion').naturalWidth > 0")
    expect(p.locator("#pairs-note")).to_contain_text("log in as admin")
    # One held-out accuracy, the same figure where the model is described and in its evaluation.
    shown = f"{100 * report['metrics']['accuracy']:.1f}% of {report['metrics']['n']} examples"
    for facts in ("#model-facts", "#eval-metrics"):
        term = p.locator(f"{facts} dt", has_text="Held-out accuracy")
        expect(term).to_have_count(1)
        expect(term.locator("xpath=following-sibling::dd")).to_have_text(shown)
    assert "entity_f1" not in report["metrics"]
    expect(p.locator("#eval-entities")).to_be_hidden()

    p.set_viewport_size(PHONE)
    _type(p, "What time is it?")
    expect(p.locator("#ranking li").first.locator(".bar-label")).to_have_text("ask_time")
    overflow = p.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
    assert console.violations() == []


def test_the_playground_behind_a_proxy_that_mounts_it_under_a_prefix(
    page: tuple[Any, Console], prefixed_site: Server
) -> None:
    """Served with --root-path /intently behind a proxy that strips the prefix (and answers 404 to
    anything outside it): the page, its script and style, the API calls and the confusion picture
    all go through the prefix."""
    p, console = page
    with prefix_proxy(prefixed_site.url, PREFIX) as (proxy, refused):
        base = f"{proxy}{PREFIX}"
        p.goto(f"{base}/")
        model = httpx.get(f"{base}/v1/model").json()
        expect(p.locator("#model-line")).to_contain_text(model["version"])
        _type(p, "What time is it?")
        expect(p.locator("#ranking li").first.locator(".bar-label")).to_have_text("ask_time")
        p.wait_for_function("document.getElementById('confusion').naturalWidth > 0")
        api_link = p.get_by_role("link", name="Intently API")
        assert api_link.evaluate("a => a.href") == f"{base}/docs"
        assert httpx.get(f"{base}/openapi.json").json()["servers"] == [{"url": PREFIX}]
        assert refused == [], f"the page asked outside its prefix: {refused}"
    assert console.violations() == []


# Each part of the marked utterance: plain text as it is, a marked span in brackets.
MARKED_PARTS = """Array.from(document.getElementById('marked').childNodes, (n) =>
  n.nodeType === Node.TEXT_NODE ? n.textContent : `[${n.querySelector('.entity-text').textContent}]`
).join('')"""


def test_entities_are_marked_in_the_utterance(page: tuple[Any, Console], tagged_site: Server) -> None:
    p, console = page
    p.goto(tagged_site.url)
    expect(p.locator("#model-facts")).to_contain_text("city, time")

    # Two characters outside the BMP first: the API counts code points, JavaScript UTF-16 units.
    text = "😀😀 weather in new york"
    answer = httpx.post(f"{tagged_site.url}/v1/classify", json={"text": text}).json()
    assert [(e["entity"], e["start"], e["end"]) for e in answer["entities"]] == [("city", 14, 22)]
    _type(p, text)
    mark = p.locator("#marked mark.entity")
    expect(mark).to_have_count(1)
    expect(mark.locator(".entity-text")).to_have_text("new york")
    expect(mark.locator(".entity-type")).to_have_text("city")
    expect(mark).to_have_attribute("data-entity", "city")
    confidence = f"{100 * answer['entities'][0]['confidence']:.1f}%"
    expect(mark).to_have_attribute("title", f"city: new york ({confidence} confidence)")
    assert p.evaluate(MARKED_PARTS) == "😀😀 weather in [new york]"
    rows = p.get_by_role("table", name="Entities", exact=True).locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td")).to_have_text(["city", "new york", "“new york”", "14–22", confidence])

    # A synonym: the span as typed is marked, the value the data gave it is listed.
    _type(p, "how warm is the big apple")
    expect(mark.locator(".entity-text")).to_have_text("the big apple")
    expect(rows.first.locator("td").nth(1)).to_have_text("new york")

    _type(p, "wake me up at 6:30")
    expect(mark.locator(".entity-type")).to_have_text("time")
    expect(mark.locator(".entity-text")).to_have_text("6:30")
    assert p.evaluate(MARKED_PARTS) == "wake me up at [6:30]"

    # This model tags entities, so an utterance without any says so instead of showing nothing.
    _type(p, "hello")
    expect(p.locator("#verdict")).to_contain_text("greet")
    expect(p.locator("#entities-none")).to_be_visible()
    expect(p.locator("#marked")).to_be_hidden()
    expect(rows).to_have_count(0)
    assert console.violations() == []


def test_evaluation_shows_entity_scores(page: tuple[Any, Console], tagged_site: Server) -> None:
    p, console = page
    p.goto(tagged_site.url)
    version = httpx.get(f"{tagged_site.url}/v1/model").json()["version"]
    metrics = httpx.get(f"{tagged_site.url}/v1/models/{version}/evaluation").json()["metrics"]
    expect(p.locator("#eval-status")).to_contain_text(version)
    expect(p.locator("#eval-entities")).to_be_visible()
    expect(p.locator("#eval-entity-metrics")).to_contain_text(f"Entity F1{metrics['entity_f1']:.4f}")
    expect(p.locator("#eval-entity-metrics")).to_contain_text(f"Entity recall{metrics['entity_recall']:.4f}")
    table = p.get_by_role("table", name=re.compile(r"^Entities \(exact span"))
    rows = table.locator("tbody tr")
    worst_first = sorted(metrics["entities"].items(), key=lambda kv: (kv[1]["f1"], kv[0]))
    expect(rows).to_have_count(len(worst_first))
    for i, (kind, s) in enumerate(worst_first):
        expect(rows.nth(i).locator("th")).to_have_text(kind)
        expect(rows.nth(i).locator("td")).to_have_text(
            [f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", str(s["support"])]
        )
    assert console.violations() == []


def test_a_wrong_token_shows_an_error(page: tuple[Any, Console], site: Server) -> None:
    p, _ = page
    p.goto(site.url)
    p.get_by_label("Admin token").fill("not-the-token")
    p.get_by_label("Admin token").press("Enter")  # keyboard only
    error = p.locator("#login-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("401")
    expect(error).to_contain_text("wrong bearer token")
    expect(p.locator("#admin-panel")).to_be_hidden()
    assert p.evaluate("sessionStorage.getItem('intently.adminToken')") is None


def test_admin_teaches_a_new_intent_then_rolls_back(page: tuple[Any, Console], site: Server) -> None:
    p, console = page
    first_version = httpx.get(f"{site.url}/v1/model").json()["version"]
    p.goto(site.url)
    p.get_by_label("Admin token").fill(TOKEN)
    p.get_by_role("button", name="Log in").click()
    expect(p.locator("#admin-panel")).to_be_visible()
    assert p.evaluate("sessionStorage.getItem('intently.adminToken')") == TOKEN
    assert p.evaluate("localStorage.length") == 0
    expect(p.locator("#versions tbody tr")).to_have_count(1)

    # An upload goes to the server as a file, and its complaint (file and line) comes back.
    p.get_by_label("Upload a data file").check()
    p.get_by_label(re.compile("^Data file")).set_input_files(
        files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": b"text,intent\nhello\n"}]
    )
    p.get_by_role("button", name="Start training").click()
    expect(p.locator("#train-error")).to_contain_text("422")
    expect(p.locator("#train-error")).to_contain_text("bad.csv")
    p.get_by_label("Add examples to an intent").check()

    p.get_by_label("Intent (new or existing)").fill("order_food")
    p.get_by_label("Examples, one per line").fill("\n".join(NEW_INTENT))
    p.get_by_label("Activation").select_option("never")
    p.get_by_text("Training options").click()
    p.get_by_label(re.compile("^Options as a JSON object")).fill(json.dumps(FAST))
    p.get_by_role("button", name="Start training").click()

    job = p.locator("#job")
    expect(job).to_be_visible()
    expect(p.locator("#job-state")).to_contain_text(re.compile(r"Training: epoch \d+ of 20"), timeout=60_000)
    # A hang guard only; how long a job trains is bench's to measure.
    expect(job).to_have_attribute("data-state", "succeeded", timeout=300_000)
    new_version = httpx.get(f"{site.url}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()[
        "versions"
    ][-1]["version"]
    expect(p.locator("#job-state")).to_contain_text(new_version)
    assert p.evaluate("document.getElementById('job-progress').value") == p.evaluate(
        "document.getElementById('job-progress').max"
    )
    # The new version's metrics beside the active one's, from the job and the versions list.
    rows = p.locator("#job-metrics tbody tr")
    expect(rows.first).to_contain_text("accuracy")
    expect(p.locator("#job-reason")).to_contain_text("Not activated")
    expect(p.locator("#versions tbody tr")).to_have_count(2)

    p.get_by_role("button", name="Activate this version").click()
    expect(p.locator("#versions-status")).to_contain_text(f"{new_version} is active")
    expect(p.locator(f'#versions tr[data-version="{new_version}"] .badge')).to_have_text("active")
    expect(p.locator("#model-line")).to_contain_text(new_version)
    _type(p, "order me some pizza")
    expect(p.locator("#ranking li").first.locator(".bar-label")).to_have_text("order_food")

    # The new version's evaluation; as admin, confused pairs come with their utterances.
    p.get_by_role("button", name="See its evaluation").click()
    expect(p.locator("#eval-status")).to_contain_text(new_version)
    expect(p.locator("#eval-f1 li").first).to_be_visible()
    expect(p.locator("#pairs-note")).to_be_hidden()

    p.get_by_role("button", name="Roll back to the previous version").click()
    expect(p.locator("#versions-status")).to_contain_text(f"{first_version} is active")
    assert httpx.get(f"{site.url}/v1/model").json()["version"] == first_version
    expect(p.locator("#ranking li").first.locator(".bar-label")).not_to_have_text("order_food")
    assert console.violations() == []
