"""Training's thread count: what a user asks for, else the environment, else the cores left free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from training import threads


def test_a_request_wins_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.choose(5) == 5
    assert threads.choose() == 3
    for bad in ("two", "0"):
        monkeypatch.setenv(threads.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=threads.THREADS_ENV):
            threads.choose()


def test_by_default_the_free_cores_and_never_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    assert 1 <= threads.choose() <= threads.usable_cores()
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (100.0, 100.0, 100.0))
    assert threads.free_cores() == 1  # a saturated machine still trains, on one thread


@pytest.mark.process
def test_configure_sets_torch_and_a_sleeping_wait_policy_before_torch_loads() -> None:
    code = (
        "import os, sys; from training import threads; n = threads.configure(2); import torch; "
        "print(n, torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "2", "PASSIVE", "True"]
