"""hadolint on the Dockerfile and shellcheck on the deployment scripts (both from PyPI, test extras)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.ci import missing_part

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    # The venv's bin first: that is where `pip install -e .[test]` puts them.
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        missing_part(f"{name} is not installed (pip install -e '.[test]')")
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_is_clean() -> None:
    scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*.sh"))
    assert scripts
    result = subprocess.run(
        [tool("shellcheck"), *scripts], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
