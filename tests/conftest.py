"""Shared test set-up: the repository root on sys.path, and the shared benchmarks folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: ../shared/benchmarks beside the checkout (CI lays it there); tests that need it skip when it is absent.
BENCHMARKS = Path(os.environ.get("POSER_BENCHMARKS", ROOT.parent / "shared" / "benchmarks"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
