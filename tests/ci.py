"""What a missing part means: a skip on a developer's machine, a failure in CI.

`.ci/run` sets INTENTLY_CI=1 after installing everything the suite uses (the test,
bench and pretrained extras, Debian's Chromium); there, a part that is still missing
is a broken install, and a skip would let CI pass without running what it claims.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

CI_ENV = "INTENTLY_CI"
# Parts `.ci/run` found no way to install on this machine (comma-separated): skipped, as it said.
CANNOT_INSTALL_ENV = "INTENTLY_CI_CANNOT_INSTALL"


def missing_part(reason: str, part: str = "") -> NoReturn:
    """Skip the test (or the module, when called at import) for `reason`; fail it under CI."""
    cannot = os.environ.get(CANNOT_INSTALL_ENV, "").split(",")
    if os.environ.get(CI_ENV) == "1" and not (part and part in cannot):
        pytest.fail(f"{reason}; under {CI_ENV}=1 this part must be installed", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
