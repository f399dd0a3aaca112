"""Every example script parses its arguments with one library call (``tyro.cli`` on its dataclass of arguments)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in [*ROOT.glob("examples/*.py"), *ROOT.glob("examples/benchmarks/*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_parses_arguments_with_tyro(script: Path) -> None:
    text = script.read_text()
    assert "argparse" not in text, f"{script.name}: parse arguments with tyro.cli(Args), not argparse"
    assert "tyro.cli(" in text, f"{script.name}: parse arguments with tyro.cli(Args)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
