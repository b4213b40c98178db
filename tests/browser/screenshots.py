"""Take the README's screenshots of the playground with Playwright and the system Chromium.

    .venv/bin/python -m tests.browser.screenshots [--store DIR] [--out docs/img]

Without --store it builds the built-in model into a temporary store first
(about a minute), so the pictures show what `make serve` shows.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from store.directory import DirectoryStore
from tests.browser.chromium import DESKTOP, PHONE, launch, missing
from tests.browser.test_playground import FAST, NEW_INTENT, NONSENSE
from tests.conftest import ROOT, Server

TOKEN = "screenshot-token"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, help="model store to show (copied; default: the built-in model)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        sys.stderr.write(f"cannot take screenshots: {reason}\n")
        return 2
    from playwright.sync_api import expect, sync_playwright

    work = Path(tempfile.mkdtemp(prefix="intently-shots-"))
    store = work / "store"
    if args.store:
        shutil.copytree(args.store, store)
    else:
        from training.default_model import ensure_default

        ensure_default(DirectoryStore(store), show_progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    server = Server([], {"INTENTLY_MODEL_STORE": str(store), "INTENTLY_ADMIN_TOKEN": TOKEN}, log=work / "log")
    try:
        server.wait_ready()
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport=DESKTOP, device_scale_factor=1)
            page.goto(server.url)
            page.get_by_label("What might a user say?").press_sequentially(
                "wake me up at 6:30 tomorrow", delay=10
            )
            expect(page.locator("#ranking li").first).to_contain_text("set_alarm")
            page.get_by_label("Admin token").fill(TOKEN)
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#admin-panel")).to_be_visible()
            page.locator("#intents button.intent").nth(3).click()
            expect(page.locator("#examples-3 li").first).to_be_visible()
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(args.out / "playground.png"))

            eval_section = page.locator("#evaluation")
            expect(page.locator("#eval-pairs tbody tr").first).to_be_visible()
            page.wait_for_function("document.getElementById('confusion').naturalWidth > 0")
            eval_section.screenshot(path=str(args.out / "evaluation.png"))

            # The admin panel after a quick job that appends a new intent (if_better decides).
            page.get_by_label("Intent (new or existing)").fill("order_food")
            page.get_by_label("Examples, one per line").fill("\n".join(NEW_INTENT))
            page.get_by_text("Training options").click()
            page.get_by_label(re.compile("^Options as a JSON object")).fill(json.dumps(FAST))
            page.get_by_role("button", name="Start training").click()
            expect(page.locator("#job")).to_have_attribute("data-state", "succeeded", timeout=300_000)
            expect(page.locator("#job-result")).to_be_visible()
            page.locator("#admin").screenshot(path=str(args.out / "admin.png"))

            phone = browser.new_page(viewport=PHONE, device_scale_factor=1)
            phone.goto(server.url)
            phone.get_by_label("What might a user say?").press_sequentially(NONSENSE, delay=10)
            expect(phone.locator("#verdict")).to_contain_text("Out of scope")
            phone.screenshot(path=str(args.out / "playground-phone.png"))
            browser.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    for name in ("playground.png", "playground-phone.png", "evaluation.png", "admin.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
