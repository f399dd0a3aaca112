"""Digest of the rule parser's specs for every prompt SceneSim's world is built from.

The SceneSim world must not change when the parser learns new prose: the parse of every GenEval metadata
prompt (``<benchmarks>/geneval/evaluation_metadata.jsonl``, 553) and of every generated prompt of the pools
(:func:`poser_env.components.generated_pool`, families ``geneval`` and ``long``, splits ``train`` and ``test``,
default sizes) must stay the same spec. This script hashes, per set, the specs' expressed content (entities,
relations, exclusions, background, style, tag, open attributes and relations; not ``unexpressed``).

    python examples/benchmarks/parser_world_digest.py --benchmarks ../shared/benchmarks          # print
    python examples/benchmarks/parser_world_digest.py --benchmarks ../shared/benchmarks --write  # pin
    python examples/benchmarks/parser_world_digest.py --dump /tmp/specs.txt                      # diff aid

``tests/test_parser_world_digest.py`` compares against the pinned file ``tests/data/parser_world_digest.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from poser_env.components import generated_pool
from poser_env.config import DEFAULT_POOL_SIZE
from poser_env.core.parser import parse
from poser_env.core.spec import Spec, read_geneval_jsonl

ROOT = Path(__file__).resolve().parents[2]
PINNED = ROOT / "tests" / "data" / "parser_world_digest.json"


def spec_line(prompt: str) -> str:
    """One canonical line for the parse of ``prompt`` (what the SceneSim world is built from)."""
    s: Spec = parse(prompt)
    return repr((prompt, s.entities, s.relations, s.exclusions, s.background, s.style, s.tag,
                 s.open_attributes, s.open_relations))


def prompt_sets(benchmarks: Path | None) -> Iterator[tuple[str, list[str]]]:
    """(name, prompts) of every set the world is built from (GenEval metadata only when ``benchmarks`` has it)."""
    if benchmarks is not None:
        meta = benchmarks / "geneval" / "evaluation_metadata.jsonl"
        if meta.is_file():
            yield "geneval_metadata", [s.prompt for s in read_geneval_jsonl(str(meta))]
    for kind in ("geneval", "long"):
        for split in ("train", "test"):
            yield f"pool_{kind}_{split}", [s.prompt for s in generated_pool(kind, split, DEFAULT_POOL_SIZE[split])]


def digests(benchmarks: Path | None, dump: Path | None = None) -> dict[str, str]:
    """Set name -> SHA-256 of its canonical spec lines (``dump``: also write every line there)."""
    out: dict[str, str] = {}
    lines_all: list[str] = []
    for name, prompts in prompt_sets(benchmarks):
        lines = [spec_line(p) for p in prompts]
        lines_all += [f"{name}\t{x}" for x in lines]
        out[name] = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    if dump is not None:
        dump.write_text("\n".join(lines_all) + "\n", encoding="utf-8")
    return out


@dataclass(frozen=True)
class Args:
    """Command-line arguments."""

    benchmarks: Path = ROOT.parent / "shared" / "benchmarks"  # folder holding geneval/evaluation_metadata.jsonl
    write: bool = False  # pin the digests in tests/data/parser_world_digest.json
    dump: Path | None = None  # write every canonical spec line to this file (to diff two versions)


def main(argv: list[str] | None = None) -> None:
    a = tyro.cli(Args, args=argv, description=__doc__)
    d = digests(a.benchmarks if a.benchmarks.is_dir() else None, a.dump)
    if a.write:
        if "geneval_metadata" not in d:
            raise SystemExit(f"--benchmarks={str(a.benchmarks)!r} has no geneval/evaluation_metadata.jsonl; "
                             "pass the folder holding it (e.g. ../shared/benchmarks) to pin all sets.")
        PINNED.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    pinned = json.loads(PINNED.read_text(encoding="utf-8")) if PINNED.is_file() else {}
    for k, v in d.items():
        print(f"{k:20s} {v[:16]}  {'same' if pinned.get(k) == v else 'CHANGED' if k in pinned else 'unpinned'}")


if __name__ == "__main__":
    main()
