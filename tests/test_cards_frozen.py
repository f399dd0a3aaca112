"""SceneSim cards version 2 are frozen: the README records their sha256, and the file must still match it."""

from __future__ import annotations

import re
from pathlib import Path

from experts.registry import CARDS_V2_PATH, card_hash

README = Path(__file__).resolve().parents[1] / "README.md"


def test_cards_v2_match_the_hash_recorded_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"frozen cards version 2: sha256 `([0-9a-f]{64})`", text)
    assert m, "the README must record the frozen cards' hash as: frozen cards version 2: sha256 `<hex>`"
    assert card_hash(CARDS_V2_PATH) == m.group(1), (
        "experts/sim/cards_v2.toml changed after it was frozen: re-run every table, add the change to the README's "
        "calibration history and record the new hash"
    )
