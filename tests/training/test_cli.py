"""The command line as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ASSISTANT, ROOT

pytestmark = pytest.mark.process  # every test runs the real command line

# Small, and 300 steps rather than the default 1000: enough to be right on the test split.
SMALL = [
    "--epochs",
    "3",
    "--set",
    "embed_dim=32",
    "--set",
    "hidden_dim=32",
    "--set",
    "ngram_buckets=2000",
    "--set",
    "min_steps=300",
    "--quiet",
]
# Pretrained vectors and the teacher have tests of their own (test_pretrained.py and the flags
# test below); elsewhere they would only add the encoder's load to every training.
FAST = [*SMALL, "--set", "vectors=", "--set", "teacher="]


def intently(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with open(ASSISTANT / "train.csv", encoding="utf-8") as f:
        all_rows = list(csv.DictReader(f))
    keep = {"ask_time", "greet", "weather", "play_music", "oos"}
    return [r for r in all_rows if r["intent"] in keep]


def test_train_evaluate_predict_csv(tmp_path: Path) -> None:
    out = tmp_path / "m"
    proc = intently("train", str(ASSISTANT / "train.csv"), "--out", str(out), *FAST)
    assert "written to" in proc.stdout and "examples kept" in proc.stderr
    assert "no rows labelled 'oos'" not in proc.stderr
    proc = intently("evaluate", str(out), str(ASSISTANT / "test.csv"), "--json")
    metrics = json.loads(proc.stdout)
    expected = {"accuracy", "macro_f1", "n", "in_scope_accuracy", "oos_recall", "oos_precision"}
    assert expected | {"oos_f1", "open_macro_f1"} <= set(metrics)
    assert {"ece", "confident_answers", "confident_accuracy"} <= set(metrics) and 0 <= metrics["ece"] <= 1
    assert metrics["n"] == 280
    assert metrics["in_scope_accuracy"] > 0.7 and metrics["oos_recall"] > 0.5  # 30 intents: chance is 0.03
    assert 0 < metrics["macro_f1"] <= 1 and metrics["accuracy"] > 0.7
    texts = ["What time is it?", "how are you", "play some music", "what is the capital of peru"]
    proc = intently("predict", str(out), *texts)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert set(lines[0]) == {
        "text",
        "intent",
        "confidence",
        "out_of_scope",
        "out_of_scope_score",
        "ranking",
        "entities",
        "model_version",
    }
    assert [line["intent"] for line in lines] == ["ask_time", "how_are_you", "play_music", None]
    assert lines[3]["out_of_scope"] and not lines[0]["out_of_scope"]
    version = json.loads((out / "model.json").read_text(encoding="utf-8"))["version"]
    assert {line["model_version"] for line in lines} == {version}
    assert lines[0]["ranking"][0] == {"intent": "ask_time", "confidence": lines[0]["confidence"]}


def test_jsonl_and_rasa_yaml_and_report(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    yml = tmp_path / "d.yml"
    by_intent: dict[str, list[str]] = {}
    for r in rows:
        by_intent.setdefault(r["intent"], []).append(r["text"])
    yml.write_text(
        "nlu:\n"
        + "".join(
            f"- intent: {i}\n  examples: |\n" + "".join(f"    - {t}\n" for t in ts)
            for i, ts in by_intent.items()
        ),
        encoding="utf-8",
    )
    intently("train", str(jsonl), "--out", str(tmp_path / "a"), "--arch", "gru", *FAST)
    assert json.loads((tmp_path / "a" / "model.json").read_text(encoding="utf-8"))["model"]["arch"] == "gru"
    # Five intents, evaluated on the very rows it learned: nearly all of them right.
    proc = intently("evaluate", str(tmp_path / "a"), str(jsonl), "--json")
    metrics = json.loads(proc.stdout)
    assert metrics["n"] == len(rows) and metrics["accuracy"] > 0.9
    intently("train", str(yml), "--out", str(tmp_path / "b"), *FAST)
    report = tmp_path / "report"
    proc = intently("evaluate", str(tmp_path / "b"), str(jsonl), "--report", str(report))
    assert "accuracy" in proc.stdout and "precision" in proc.stdout
    assert (report / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert (report / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    written = json.loads((report / "report.json").read_text())
    assert written["metrics"]["n"] == len(rows)
    assert sum(b["rows"] for b in written["reliability"]) == len(rows)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "intent"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "intent": r["intent"]} for r in rows)
    return path


def test_training_without_oos_rows_says_how_to_catch_more(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    data = write_csv(tmp_path / "no_oos.csv", [r for r in rows if r["intent"] != "oos"])
    proc = intently("train", str(data), "--out", str(tmp_path / "m"), *FAST)
    assert "no rows labelled 'oos'" in proc.stderr
    assert "retrained on all" not in proc.stderr  # 40 or more examples an intent
    assert "unknown-intent detector:" in proc.stderr
    assert "detector" in json.loads((tmp_path / "m" / "model.json").read_text(encoding="utf-8"))
    # By default the detector keeps the known requests: at most 2% of their validation rows turned away.
    meta = json.loads((tmp_path / "m" / "model.json").read_text(encoding="utf-8"))
    assert meta["training"]["options"]["reject_known"] == 0 and meta["metrics"]["detector_rejected"] <= 0.02
    assert "entity types learned (" in proc.stderr  # the built-in rows carry markup
    # No `oos` rows in the data: no `oos` row in evaluate's table, whatever was turned away.
    table = intently("evaluate", str(tmp_path / "m"), str(data)).stdout
    assert "  intent " in table and not any(line.split()[:1] == ["oos"] for line in table.splitlines())
    intently("train", str(data), "--out", str(tmp_path / "more"), "--reject-known", "0.2", *FAST)
    meta = json.loads((tmp_path / "more" / "model.json").read_text(encoding="utf-8"))
    assert meta["training"]["options"]["reject_known"] == 0.2
    assert meta["metrics"]["detector_rejected"] == pytest.approx(0.2, abs=0.05)


def test_training_on_few_examples_says_it_refit(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    few = [r for i, r in enumerate(rows) if sum(x["intent"] == r["intent"] for x in rows[:i]) < 10]
    data = write_csv(tmp_path / "few.csv", few)
    # Without a teacher: after distillation there is no refit (test_pretrained.py).
    proc = intently("train", str(data), "--out", str(tmp_path / "m"), *FAST)
    assert f"retrained on all {len(few)} rows" in proc.stderr
    meta = json.loads((tmp_path / "m" / "model.json").read_text(encoding="utf-8"))
    assert meta["training"]["refit_on_all_examples"] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "/nonexistent/model", "hi"], "model directory not found"),
        (["train", "missing.csv", "--out", "x"], "missing.csv: no such file"),
        (["train", str(ASSISTANT / "train.csv")], "--out DIR or --store DIR"),
        (["train", str(ASSISTANT / "train.csv"), "--out", "x", "--set", "bogus=1"], "--set 'bogus=1'"),
        (
            ["train", str(ASSISTANT / "train.csv"), "--out", "x", "--reject-known", "2"],
            "option reject_known=2 is outside 0.0..0.9",
        ),
    ],
)
def test_errors_are_one_clear_line(args: list[str], message: str) -> None:
    proc = intently(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_pretrained_flags_reach_the_training_options(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    few = [r for i, r in enumerate(rows) if sum(x["intent"] == r["intent"] for x in rows[:i]) < 5]
    data = write_csv(tmp_path / "few.csv", few)
    intently("train", str(data), "--out", str(tmp_path / "m"), "--no-vectors", "--teacher", "none", *SMALL)
    training = json.loads((tmp_path / "m" / "model.json").read_text(encoding="utf-8"))["training"]
    assert training["options"]["vectors"] == "" and training["options"]["teacher"] == "none"
    assert training["vectors"] == training["teacher"] == {"source": None, "reason": "turned off"}
    proc = intently(
        "train", str(data), "--out", str(tmp_path / "n"), "--vectors", "x", "--no-vectors", check=False
    )
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr
