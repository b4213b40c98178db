"""Python processes in which torch cannot be imported, as where `pip install intently` put no torch.

`blocker_dir(tmp)` writes a `sitecustomize.py` that refuses `torch` (and its submodules) at import:
put the directory first on a child's PYTHONPATH and every `import torch` there, and every
`importlib.util.find_spec("torch")`, fails as in an environment without it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import ROOT

BLOCKER = '''\
import sys


class _NoTorch:
    """The test's stand-in for an environment without torch (tests/support/no_torch.py)."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
'''


def blocker_dir(where: Path) -> Path:
    folder = where / "no-torch"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    return folder


def no_torch_env(where: Path) -> dict[str, str]:
    """Environment variables for a child process without torch (the project importable as from ROOT)."""
    path = os.pathsep.join([str(blocker_dir(where)), str(ROOT)])
    return {"PYTHONPATH": path}
