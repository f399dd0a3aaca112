"""Shared test set-up: the repository root on sys.path, and the shared benchmarks folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: ../shared/benchmarks beside the checkout (CI lays it there); tests that need it skip when it is absent.
BENCHMARKS = Path(os.environ.get("POSER_BENCHMARKS", ROOT.parent / "shared" / "benchmarks"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _sb3_logs_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """SB3 makes a fresh ``SB3-<date>`` folder in the system temp dir for every ``learn()`` without a log folder;
    keep those inside pytest's temp tree instead of littering /tmp."""
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path_factory.getbasetemp() / "sb3-logs"))
