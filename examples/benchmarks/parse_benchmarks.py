"""Run the rule-based parser over every public prompt set in ``../shared/benchmarks`` (no crash check).

For each file (or set) it reports how many prompts parse to a non-empty spec, how many raise the
documented :class:`poser_env.core.parser.ParseError`, the median number of assertions, and the parse time;
then it prints five parsed DPG-Bench prompts. Any other exception is a bug and is re-raised.

Usage::

    PYTHONPATH=. python examples/benchmarks/parse_benchmarks.py [BENCHMARK_DIR] [--examples 5]

Formats read (see the folder's README): GenEval ``evaluation_metadata.jsonl`` (``prompt``), T2I-CompBench
``*.txt`` (one prompt a line), DPG-Bench ``prompts/*.txt`` (one prompt a file), DSG-1k
``dsg-1k-anns.csv`` (column ``text``, one per ``item_id``), LongBench-T2I ``instruction.jsonl``
(``instruction``), ConceptMix ``*.json`` (list of ``{"sentence": ...}``).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from poser_env.core.parser import ParseError, parse
from poser_env.core.spec import Spec

DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "benchmarks"


@dataclass(frozen=True)
class Args:
    """Command-line arguments."""

    root: tyro.conf.Positional[Path] = DEFAULT_DIR  # benchmark folder
    examples: int = 5  # DPG-Bench prompts to print parsed


def iter_prompt_sets(root: Path) -> Iterator[tuple[str, list[str]]]:
    """``(name, prompts)`` for every prompt file/set under ``root`` (names relative to ``root``)."""
    root = Path(root)
    gen = root / "geneval" / "evaluation_metadata.jsonl"
    if gen.exists():
        yield "geneval/evaluation_metadata.jsonl", [
            json.loads(line)["prompt"] for line in gen.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    for f in sorted((root / "t2i-compbench").rglob("*.txt")):
        lines = [ln.strip() for ln in f.read_text(encoding="utf-8", errors="replace").splitlines()]
        yield str(f.relative_to(root)), [ln for ln in lines if ln]
    dpg = sorted((root / "dpg-bench" / "prompts").glob("*.txt"))
    if dpg:
        yield "dpg-bench/prompts/*.txt", [f.read_text(encoding="utf-8", errors="replace").strip() for f in dpg]
    dsg = root / "dsg-1k" / "dsg-1k-anns.csv"
    if dsg.exists():
        seen: dict[str, str] = {}
        with open(dsg, encoding="utf-8", errors="replace", newline="") as fh:
            for row in csv.DictReader(fh):
                seen.setdefault(row["item_id"], row["text"])
        yield "dsg-1k/dsg-1k-anns.csv", list(seen.values())
    lb = root / "longbench-t2i" / "instruction.jsonl"
    if lb.exists():
        yield "longbench-t2i/instruction.jsonl", [
            json.loads(line)["instruction"] for line in lb.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    for f in sorted((root / "conceptmix").glob("*.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        yield str(f.relative_to(root)), [str(d["sentence"]) for d in data]


@dataclass(frozen=True)
class Row:
    """Per-set result."""

    name: str
    n: int
    non_empty: int
    errors: int
    median_assertions: float
    ms_per_prompt: float


def run_set(name: str, prompts: list[str]) -> tuple[Row, list[Spec | None]]:
    """Parse every prompt of a set; ParseError counts as empty, anything else propagates."""
    specs: list[Spec | None] = []
    t0 = time.perf_counter()
    for p in prompts:
        try:
            specs.append(parse(p))
        except ParseError:
            specs.append(None)
    dt = time.perf_counter() - t0
    sizes = [len(s.assertions()) for s in specs if s is not None]
    non_empty = sum(1 for s in specs if s is not None and s.entities)
    row = Row(name, len(prompts), non_empty, sum(s is None for s in specs),
              float(statistics.median(sizes)) if sizes else 0.0, 1000 * dt / max(1, len(prompts)))
    return row, specs


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv, description=__doc__)
    args = Args(Path(args.root).resolve(), args.examples)
    if not args.root.is_dir():
        print(f"benchmark folder {args.root} not found; pass its path as the first argument.", file=sys.stderr)
        return 2
    print(f"{'set':58s} {'prompts':>7s} {'non-empty':>9s} {'%':>6s} {'errors':>6s} {'median':>6s} {'ms/p':>6s}")
    dpg_examples: list[tuple[str, Spec]] = []
    for name, prompts in iter_prompt_sets(args.root):
        row, specs = run_set(name, prompts)
        pct = 100.0 * row.non_empty / max(1, row.n)
        print(f"{row.name:58s} {row.n:7d} {row.non_empty:9d} {pct:6.1f} {row.errors:6d} "
              f"{row.median_assertions:6.1f} {row.ms_per_prompt:6.2f}")
        if name.startswith("dpg-bench"):
            dpg_examples = [(p, s) for p, s in zip(prompts, specs) if s is not None][: args.examples]
    for prompt, spec in dpg_examples:
        print("\nPROMPT:", prompt)
        print("SPEC:  ", json.dumps(spec.to_geneval(), sort_keys=True)[:1200])
        print("ASSERTIONS:", "; ".join(a.text for a in spec.assertions()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
