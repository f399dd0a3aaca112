"""Count the outcomes recorded by tests/test_hostile_agents.py (HOSTILE_TALLY=<file>) into the issue-19 table.

    HOSTILE_TALLY=/tmp/after.jsonl python -m pytest tests/test_hostile_agents.py -q
    python examples/benchmarks/hostile_tally.py /tmp/after.jsonl [--skip-na]

``--skip-na`` leaves out the cases about files the code before issue 19 could not write (the safe policy format and
short-run checkpoints), for a before/after comparison on the same inputs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import tyro

COLUMNS = ("clear error", "misleading", "silent wrong", "deep traceback", "hang", "data lost", "handled")
#: Cases that tamper with files of the safe format / checkpoints, which did not exist before issue 19.
NOT_APPLICABLE_BEFORE = ("eval-policy-tampered-", "train-resume-checkpoint-bad-json",
                         "train-resume-checkpoint-truncated-weights", "train-resume-folder-skips-damaged-newest")


@dataclass(frozen=True)
class Args:
    files: tyro.conf.Positional[tuple[str, ...]]  # JSONL files written with HOSTILE_TALLY (later lines win per case)
    skip_na: bool = False  # leave out the cases not applicable before issue 19


def main(args: Args) -> None:
    outcome: dict[str, str] = {}
    for f in args.files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                outcome[row["case"]] = row["outcome"]
    if args.skip_na:
        outcome = {k: v for k, v in outcome.items() if not k.startswith(NOT_APPLICABLE_BEFORE)}
    counts = Counter(outcome.values())
    print("| tried | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    print(f"| {len(outcome)} | " + " | ".join(str(counts.get(c, 0)) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))
