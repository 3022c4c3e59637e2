"""Test-session set-up shared by every test module.

The repository root goes at the *end* of sys.path so that `tools/` (topology
helpers) imports, while `stack`, `fastpath` and `tun` still come from the
installed package (see tools/run-tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
