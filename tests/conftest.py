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
    # MiniLM's on-disk embedding store: one per test session, never the user's ~/.cache
    monkeypatch.setenv("IMAGE_POSER_CACHE", str(tmp_path_factory.getbasetemp() / "image-poser-cache"))


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--device``: where the ``gpu``-marked tests run their models (default ``cpu``: they are skipped)."""
    parser.addoption("--device", action="store", default="cpu",
                     help="torch device of the gpu-marked tests (tests/test_gpu.py), e.g. cuda or cuda:1; "
                          "default cpu skips them")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The ``--device`` option, checked (``poser_env.core.device.check_device``)."""
    from poser_env.core.device import check_device

    return check_device(request.config.getoption("--device"), "--device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu``-marked tests unless ``--device`` names an accelerator."""
    if str(config.getoption("--device")).startswith("cpu"):
        skip = pytest.mark.skip(reason="needs an accelerator: run with -m gpu --device cuda")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
