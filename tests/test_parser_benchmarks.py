"""No-crash check of the rule parser over every public prompt set in ../shared/benchmarks (skipped if absent)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from poser_env.core.parser import ParseError, parse

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".." / "shared" / "benchmarks"
SCRIPT = ROOT / "examples" / "benchmarks" / "parse_benchmarks.py"

pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="../shared/benchmarks is absent")


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("parse_benchmarks", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["parse_benchmarks"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_benchmark_prompt_parses_or_raises_parse_error() -> None:
    sets = dict(_script().iter_prompt_sets(BENCH))
    families = {name.split("/")[0] for name in sets}
    assert families >= {"geneval", "t2i-compbench", "dpg-bench", "dsg-1k", "longbench-t2i", "conceptmix"}
    unique = sorted({p for prompts in sets.values() for p in prompts})
    assert len(unique) > 5000
    empty = 0
    for p in unique:
        try:
            spec = parse(p)
        except ParseError:
            empty += 1
            continue
        assert spec.entities or spec.background, p
    assert empty / len(unique) < 0.01  # almost every real prompt names something drawable


def test_script_reports_every_set(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _script()
    row, specs = mod.run_set("tiny", ["a red cup", "", "two dogs left of a cat"])
    assert (row.n, row.non_empty, row.errors, row.median_assertions) == (3, 2, 1, 3.0)  # 2 and 4 assertions
    assert specs[1] is None
    assert mod.main([str(BENCH / "missing-folder")]) == 2
