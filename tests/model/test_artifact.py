from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from model.artifact import META_FILE, WEIGHTS_FILE, ArtifactError, load, read_meta
from model.config import ModelConfig
from model.predictor import Predictor
from tests.conftest import ROOT

PROBES = ["What time is it?", "set an alarm for 7", "wether tomorow", "how do I bake bread?", "🙂"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_round_trip_gives_identical_predictions(small_result, small_model_dir: Path) -> None:
    live = Predictor(small_result.net, small_result.meta, small_result.tokenizer)
    loaded = Predictor.load(small_model_dir)
    assert np.array_equal(live.logits(PROBES), loaded.logits(PROBES))
    assert [p.to_dict() for p in live.predict_batch(PROBES)] == [
        p.to_dict() for p in loaded.predict_batch(PROBES)
    ]


def test_model_json_holds_the_documented_facts(small_model_dir: Path) -> None:
    meta = json.loads((small_model_dir / META_FILE).read_text())
    for key in (
        "format_version",
        "model",
        "tokenizer",
        "vocab",
        "labels",
        "threshold",
        "temperature",
        "data",
        "metrics",
        "created_at",
        "version",
    ):
        assert key in meta
    assert meta["data"]["checksum"].startswith("sha256:") and meta["data"]["examples"] > 1000
    assert meta["model"]["arch"] == "lstm"


def test_no_temporary_directories_are_left(small_model_dir: Path) -> None:
    assert [p.name for p in small_model_dir.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: os.remove(d / META_FILE), "model.json missing"),
        (lambda d: os.remove(d / WEIGHTS_FILE), "weights.safetensors missing"),
        (lambda d: (d / META_FILE).write_text("{not json"), "not valid JSON"),
        (lambda d: (d / META_FILE).write_text('{"format": "other"}'), "not an Intently model"),
        (lambda d: (d / WEIGHTS_FILE).write_bytes((d / WEIGHTS_FILE).read_bytes()[:1000]), "safetensors"),
        (lambda d: (d / WEIGHTS_FILE).write_bytes(b"\x00" * 64), "safetensors"),
    ],
)
def test_corrupt_artifact_is_refused_clearly(small_model_dir: Path, tmp_path: Path, damage, message) -> None:
    broken = _copy(small_model_dir, tmp_path / "broken")
    damage(broken)
    with pytest.raises(ArtifactError, match=message):
        load(broken)


def _with_meta(src: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the model directory whose model.json `change` edited."""
    d = _copy(src, dst)
    meta = json.loads((d / META_FILE).read_text())
    change(meta)
    (d / META_FILE).write_text(json.dumps(meta))
    return d


def test_future_format_version_is_refused(small_model_dir: Path, tmp_path: Path) -> None:
    d = _with_meta(small_model_dir, tmp_path / "future", lambda meta: meta.update(format_version=99))
    with pytest.raises(ArtifactError, match="format version 99"):
        read_meta(d)


def test_absurd_sizes_in_metadata_are_refused(small_model_dir: Path, tmp_path: Path) -> None:
    d = _with_meta(small_model_dir, tmp_path / "huge", lambda meta: meta["model"].update(embed_dim=10**9))
    with pytest.raises(ArtifactError, match="embed_dim"):
        load(d)


def test_a_flag_that_is_not_a_boolean_is_refused(small_model_dir: Path, tmp_path: Path) -> None:
    def flag_as_text(meta: dict[str, Any]) -> None:
        assert meta["model"]["bag_char_ngrams"] is True  # today's default: the wide path reads n-grams
        meta["model"]["bag_char_ngrams"] = "false"  # truthy: would build a table the weights lack

    d = _with_meta(small_model_dir, tmp_path / "flag", flag_as_text)
    with pytest.raises(ArtifactError, match="bag_char_ngrams must be true or false"):
        load(d)


def test_a_model_without_the_character_bag_does_not_name_it(small_result) -> None:
    """So that it still loads in releases from before the setting existed."""
    cfg = replace(small_result.meta.model, bag_char_ngrams=False)
    assert "bag_char_ngrams" not in cfg.to_dict()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_tensor_with_absurd_shape_is_refused_before_reading(small_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(small_model_dir, tmp_path / "shape")
    tensors = {"embed.words.weight": np.zeros((2, 2), dtype=np.float32)}
    save_file(tensors, str(d / WEIGHTS_FILE))
    with pytest.raises(ArtifactError, match=r"does not match model\.json"):
        load(d)


def test_a_pickle_is_never_executed(small_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(small_model_dir, tmp_path / "pickled")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):  # runs on unpickling, if anything unpickled it
            return (os.system, (f"touch {marker}",))

    (d / WEIGHTS_FILE).write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ArtifactError):
        load(d)
    assert not marker.exists()


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load(tmp_path / "nope")


def test_coverage_threshold_is_checked_and_absent_means_off(small_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(small_model_dir, tmp_path / "coverage")
    meta = json.loads((d / META_FILE).read_text())
    assert 0 < meta["coverage_threshold"] < 1  # today's default
    assert Predictor.load(d).coverage is not None
    for bad in ("0.3", True, 1.5):
        meta["coverage_threshold"] = bad
        (d / META_FILE).write_text(json.dumps(meta))
        with pytest.raises(ArtifactError, match="coverage_threshold"):
            load(d)
    del meta["coverage_threshold"]  # an artifact from before the setting: loads, answers as it did
    (d / META_FILE).write_text(json.dumps(meta))
    assert Predictor.load(d).coverage is None


# Saves a "new" model over an "old" one in a forked child that SIGKILLs itself just before
# its k-th file-system call, for k = 1, 2, ... until a save completes; after each kill the
# parent reads what is at the target. Audit hooks see every call save makes from Python.
KILL_MID_SAVE = """
import json, os, signal, sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from model.artifact import load, save
from model.runtime import Weights

CALLS = {"open", "os.mkdir", "os.rename", "os.chmod", "os.remove", "os.rmdir", "shutil.rmtree",
         "ctypes.call_function"}
weights, meta, _ = load(sys.argv[1])
net = Weights(weights)
target = Path(sys.argv[2]) / "model"
outcomes = []
for k in range(1, 200):
    save(net, replace(meta, version="old"), target)
    pid = os.fork()
    if pid == 0:
        seen = [0]
        def hook(event, args):
            if event in CALLS:
                seen[0] += 1
                if seen[0] == k:
                    os.kill(os.getpid(), signal.SIGKILL)
        sys.addaudithook(hook)
        save(net, replace(meta, version="new"), target)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    try:
        found = load(target)[1].version
    except Exception as exc:
        found = f"unloadable: {exc}"
    outcomes.append({"kill_at": k, "killed": os.WIFSIGNALED(status), "found": found})
    if not os.WIFSIGNALED(status):
        break
print(json.dumps(outcomes))
"""


@pytest.mark.process
def test_a_kill_at_any_point_of_a_save_leaves_the_old_or_the_new_model(
    small_model_dir: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILL_MID_SAVE, str(small_model_dir), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcomes = json.loads(proc.stdout)
    killed = [o for o in outcomes if o["killed"]]
    assert len(killed) >= 5 and not outcomes[-1]["killed"]  # it was stopped at every step, then finished
    assert [o for o in outcomes if o["found"] not in ("old", "new")] == []
    assert outcomes[0]["found"] == "old" and outcomes[-1]["found"] == "new"


def test_saving_over_a_model_where_the_kernel_cannot_swap(
    small_result, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model import artifact

    monkeypatch.setattr(artifact, "_renameat2", lambda: None)  # as on macOS
    target = tmp_path / "m"
    for version in ("old", "new"):
        artifact.save(small_result.net, replace(small_result.meta, version=version), target)
    assert read_meta(target).version == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
