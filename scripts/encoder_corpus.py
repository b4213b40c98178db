"""Gather the pretraining corpus of the shipped encoder: ordinary English messages, one a line.

    python scripts/encoder_corpus.py --out corpus.txt [--benchmarks ../shared/data]

Sources (docs/training.md, "The pretrained encoder", records versions and licences):
- chitchat-dataset (PyPI, MIT): typed chat messages;
- WordNet 3.0 (Debian's wordnet-base, WordNet licence): the example phrases of its glosses;
- home-assistant-intents + hassil (PyPI, Apache-2.0): the English templates of a voice assistant,
  expanded into commands with made-up names.

Every text that a public intent benchmark holds (any CSV or JSON Lines file under
`--benchmarks`) is removed: those data sets measure the project and never teach it.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
_QUOTED = re.compile(r'"([^"]{8,200})"')
_SPACE = re.compile(r"\s+")
# Made-up names for the templates' name/area/floor slots (the packages leave them to the user's home).
_NAMES = [
    "kitchen light",
    "desk lamp",
    "ceiling fan",
    "front door",
    "tv",
    "heater",
    "garage door",
    "porch light",
    "coffee maker",
    "bedroom lamp",
    "living room speaker",
    "hallway light",
]
_AREAS = ["kitchen", "living room", "bedroom", "office", "garage", "bathroom", "garden", "hallway"]
_FLOORS = ["first floor", "ground floor", "upstairs", "downstairs", "basement"]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed: pip install {name.replace('_', '-')}")
    return Path(spec.origin).parent


def chitchat() -> Iterator[str]:
    data = json.loads((_package_dir("chitchat_dataset") / "dataset.json").read_text(encoding="utf-8"))
    for conversation in data.values():
        for turn in conversation["messages"]:
            for message in turn:
                yield message["text"]


def wordnet() -> Iterator[str]:
    if not WORDNET.is_dir():
        raise SystemExit(f"no WordNet at {WORDNET}: apt-get install wordnet-base")
    for part in ("noun", "verb", "adj", "adv"):
        with open(WORDNET / f"data.{part}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # the licence header
                yield from _QUOTED.findall(line.split("|", 1)[1])


def assistant_commands(per_intent: int, seed: int) -> Iterator[str]:
    return (text for _, text in assistant_examples(per_intent, seed))


def assistant_examples(per_intent: int, seed: int) -> Iterator[tuple[str, str]]:
    """(intent, command) pairs: at most `per_intent` commands of each English intent."""
    from hassil.intents import Intents, TextSlotList
    from hassil.sample import sample_intents

    data = json.loads((_package_dir("home_assistant_intents") / "data" / "en.json").read_text("utf-8"))
    intents = Intents.from_dict(data)
    lists = {
        "name": TextSlotList.from_strings(_NAMES),
        "area": TextSlotList.from_strings(_AREAS),
        "floor": TextSlotList.from_strings(_FLOORS),
    }
    rng = random.Random(seed)
    for intent in sorted(intents.intents):
        texts: list[str] = []
        try:
            for _, text in sample_intents(intents, lists, intent_names={intent}, language="en"):
                if "{" not in text:  # a slot no list fills
                    texts.append(text)
                if len(texts) >= 50 * per_intent:
                    break
        except Exception as exc:  # a template naming a list we do not fill: skip that intent
            print(f"skipped {intent}: {exc}", file=sys.stderr)
            continue
        yield from ((intent, text) for text in rng.sample(texts, min(per_intent, len(texts))))


def normal(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def benchmark_texts(root: Path) -> set[str]:
    """Every text of the CSV and JSON Lines files below `root`, case-folded."""
    out: set[str] = set()
    for path in sorted(root.rglob("*")):
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                out.update(normal(row["text"]).casefold() for row in csv.DictReader(f))
        elif path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                out.update(normal(json.loads(line)["text"]).casefold() for line in f if line.strip())
    return out


def gather(
    sources: Iterable[tuple[str, Iterable[str]]], banned: set[str]
) -> tuple[list[str], dict[str, int]]:
    seen: set[str] = set()
    kept: list[str] = []
    counts: dict[str, int] = {"benchmark_matches_removed": 0}
    for name, texts in sources:
        n = 0
        for raw in texts:
            text = normal(raw)
            key = text.casefold()
            if key in banned:
                counts["benchmark_matches_removed"] += 1
                continue
            if not 2 <= len(text) <= 300 or key in seen:
                continue
            seen.add(key)
            kept.append(text)
            n += 1
        counts[name] = n
    return kept, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--benchmarks", type=Path, help="folder of public intent data sets to keep out")
    parser.add_argument("--commands-per-intent", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    banned = benchmark_texts(args.benchmarks) if args.benchmarks else set()
    kept, counts = gather(
        [
            ("chitchat-dataset", chitchat()),
            ("wordnet", wordnet()),
            ("home-assistant-intents", assistant_commands(args.commands_per_intent, args.seed)),
        ],
        banned,
    )
    random.Random(args.seed).shuffle(kept)
    args.out.write_text("".join(t + "\n" for t in kept), encoding="utf-8")
    sources = {
        "sentences": len(kept),
        "sources": [
            {"name": "chitchat-dataset", "version": _version("chitchat-dataset"), "licence": "MIT",
             "taken": "every message of its conversations", "sentences": counts["chitchat-dataset"]},
            {"name": "WordNet 3.0 (Debian wordnet-base)", "version": "3.0", "licence": "WordNet 3.0 licence",
             "taken": "the quoted example phrases of its glosses", "sentences": counts["wordnet"]},
            {"name": "home-assistant-intents + hassil",
             "version": f"{_version('home-assistant-intents')} + {_version('hassil')}",
             "licence": "Apache-2.0",
             "taken": f"English templates with made-up names, at most {args.commands_per_intent} an intent",
             "sentences": counts["home-assistant-intents"]},
        ],
        "benchmark_texts_kept_out": len(banned),
        "benchmark_matches_removed": counts["benchmark_matches_removed"],
        "command": "python scripts/encoder_corpus.py --out corpus.txt --benchmarks ../shared/data",
    }  # fmt: skip
    args.out.with_suffix(".sources.json").write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(sources))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
