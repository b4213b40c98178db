"""bench/results/NAME.json: where benchmarks and the load test leave their figures (git-ignored)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """RESULTS/NAME.json, so a run's figures can be diffed or plotted later."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
