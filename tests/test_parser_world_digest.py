"""The SceneSim world is pinned: the rule parser's spec of every GenEval metadata prompt and of every generated
pool prompt (families geneval and long, splits train and test, default sizes) hashes to the committed digests
(``tests/data/parser_world_digest.json``; re-pin only on purpose with
``python examples/benchmarks/parser_world_digest.py --benchmarks ../shared/benchmarks --write``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from tests.conftest import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "benchmarks" / "parser_world_digest.py"


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("parser_world_digest", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["parser_world_digest"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_parser_world_digest_is_unchanged() -> None:
    pinned = json.loads((ROOT / "tests" / "data" / "parser_world_digest.json").read_text(encoding="utf-8"))
    got = _script().digests(BENCHMARKS if BENCHMARKS.is_dir() else None)
    assert set(got) <= set(pinned)
    # the generated pools are always checked; the GenEval metadata set when ../shared/benchmarks is there
    assert {"pool_geneval_train", "pool_geneval_test", "pool_long_train", "pool_long_test"} <= set(got)
    changed = sorted(k for k in got if got[k] != pinned[k])
    assert not changed, f"the parse of these prompt sets changed (the SceneSim world would change): {changed}"
