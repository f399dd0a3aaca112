"""The decomposition benchmark's scoring (poser_env/decompose_eval.py) and the lexicon loader, on small fixed data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from poser_env.core.lexicon import load_lexicon
from poser_env.core.parser import parse
from poser_env.core.spec import Entity, Exclusion, Relation, Spec, SpecError
from poser_env.decompose_eval import (
    assertion_keys,
    decompose_report,
    head,
    load_dsg,
    score_dsg,
    score_item,
    score_specs,
)

ROWS = [
    # item_id, text, category_broad, category_detailed, tuple
    ("vrd_1", "two red cups on a table", "entity", "whole", "entity - whole (cups)"),
    ("vrd_1", "two red cups on a table", "entity", "whole", "entity - whole (table)"),
    ("vrd_1", "two red cups on a table", "attribute", "color", "attribute - color (cups, red)"),
    ("vrd_1", "two red cups on a table", "other", "count", "other - count (cups, ==2)"),
    ("vrd_1", "two red cups on a table", "relation", "spatial", "relation - spatial (cups, table, on)"),
    ("tifa_2", "a dog behind a teal fence", "entity", "whole", "entity - whole (dog)"),
    ("tifa_2", "a dog behind a teal fence", "entity", "whole", "entity - whole (fence)"),
    ("tifa_2", "a dog behind a teal fence", "attribute", "color", "attribute - color (fence, teal)"),
    ("tifa_2", "a dog behind a teal fence", "relation", "spatial", "relation - spatial (dog, fence, behind)"),
    ("tifa_3", "people next to a man", "entity", "whole", "entity - whole (people)"),
    ("tifa_3", "people next to a man", "entity", "whole", "entity - whole (man)"),
    ("tifa_3", "people next to a man", "relation", "spatial", "relation - spatial (man, people, next to)"),
]


@pytest.fixture
def dsg_csv(tmp_path: Path) -> Path:
    path = tmp_path / "dsg-1k-anns.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
                    "category_detailed", "tuple", "question_natural_language"])
        for k, (iid, text, broad, detail, tup) in enumerate(ROWS):
            w.writerow([iid, text, "", k, 0, broad, detail, tup, "?"])
    return path


def test_load_dsg(dsg_csv: Path) -> None:
    items = load_dsg(dsg_csv.parent)
    assert [it.item_id for it in items] == ["vrd_1", "tifa_2", "tifa_3"]
    assert items[0].source == "vrd" and items[0].entities == ["cups", "table"]
    assert items[0].counts == [("cups", "==2")] and items[0].spatial == [("cups", "table", "on")]
    assert items[1].attributes == [("color", "fence", "teal")]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dsg(dsg_csv.parent / "missing")


def test_head_noun_rule() -> None:
    assert head("Cups") == "cup" and head("people") == "person" and head("teddy bears") == "bear"
    assert head("person's left foot") == "foot" and head("flowers_2") == "flower"


def test_score_item_exact_counts(dsg_csv: Path) -> None:
    items = load_dsg(dsg_csv)
    c = score_item(items[0], parse(items[0].text))
    assert (c["entity"].tp_pred, c["entity"].n_pred, c["entity"].tp_gold, c["entity"].n_gold) == (2, 2, 2, 2)
    assert (c["color"].tp_gold, c["color"].n_gold, c["count"].tp_gold, c["count"].n_gold) == (1, 1, 1, 1)
    assert (c["spatial"].tp_gold, c["spatial"].n_gold) == (1, 1)
    c = score_item(items[1], parse(items[1].text))
    assert c["color"].n_gold == 0  # teal is not a spec colour: not expressible, scored as an open attribute
    assert c["open_attr"].n_gold == 1 and c["open_rel"].n_gold == 1 and c["spatial"].n_gold == 0
    c = score_item(items[1], parse(items[1].text, open_vocab=True))
    assert (c["open_attr"].tp_gold, c["open_rel"].tp_gold) == (1, 1)
    c = score_item(items[2], parse(items[2].text))  # inverse relation: "people next to man" matches
    assert (c["spatial"].tp_gold, c["entity"].tp_gold) == (1, 2)
    c = score_item(items[0], None)  # a failed parse predicts nothing
    assert c["entity"].n_pred == 0 and c["entity"].recall == 0.0


def test_score_dsg_and_report(dsg_csv: Path, tmp_path: Path) -> None:
    rep = score_dsg(load_dsg(dsg_csv), parse)
    assert rep.n_prompts == 3 and not rep.errors
    assert rep.overall["entity"].recall == 1.0 and set(rep.per_source) == {"vrd", "tifa"}
    bench = tmp_path / "bench"
    (bench / "dsg-1k").mkdir(parents=True)
    (bench / "dsg-1k" / "dsg-1k-anns.csv").write_text(dsg_csv.read_text(encoding="utf-8"), encoding="utf-8")
    md = decompose_report(parse, benchmarks=bench, long_n=5)
    assert "| long test split (5) | 5 | 5 | 1.000 | 1.000 | 0 |" in md and "DSG-1k: 3 prompts" in md
    with pytest.raises(FileNotFoundError, match="benchmarks="):
        decompose_report(parse, benchmarks=tmp_path / "nope", long_n=0)


def test_misses_are_listed(dsg_csv: Path, tmp_path: Path) -> None:
    items = load_dsg(dsg_csv)
    misses: list[tuple[str, str, str]] = []
    score_item(items[0], None, misses)  # nothing predicted: every gold tuple is missed
    assert ("entity", "missed", "'cups'") in misses and ("spatial", "missed", "('cups', 'on top of', 'table')") in misses
    misses = []
    score_item(items[0], parse("two red cups on a table and a lamp"), misses)
    assert misses == [("entity", "extra", "'lamp'")]
    bench = tmp_path / "bench"
    (bench / "dsg-1k").mkdir(parents=True)
    (bench / "dsg-1k" / "dsg-1k-anns.csv").write_text(dsg_csv.read_text(encoding="utf-8"), encoding="utf-8")
    md = decompose_report(lambda _: parse("a lamp"), benchmarks=bench, long_n=0, misses=1)
    assert "entity, missed: " in md and "- vrd_1: 'cups'" in md and "entity, extra: 3" in md
    assert "DSG-1k misses" not in decompose_report(parse, benchmarks=bench, long_n=0)


def test_score_specs_counts_exact_and_assertions() -> None:
    gold = [Spec((Entity("cup", 2, "red"),), (), (Exclusion("cup", 3),), prompt="two red cups"),
            Spec((Entity("dog"), Entity("cat")), (Relation(0, "left of", 1),), prompt="a dog right of a cat")]
    rep = score_specs(gold, parse)
    assert rep.n == 2 and rep.exact == 1
    assert rep.assertions.n_gold == 3 + 3 and rep.assertions.tp_gold == 3 + 2
    assert assertion_keys(gold[1]) == {("exists", "dog", None, None, 1), ("exists", "cat", None, None, 1),
                                       ("relation", "dog", "cat", "left of", None)}


def test_heldout_file_is_valid_and_independent() -> None:
    path = Path(__file__).parent / "data" / "heldout_phrasings.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) == 60
    specs = [Spec.from_geneval(r) for r in records]
    assert all(s.prompt and s.entities for s in specs)


def test_lexicon_refuses_values_outside_the_spec() -> None:
    text = (Path(__file__).resolve().parents[1] / "poser_env" / "data" / "lexicon.toml").read_text(encoding="utf-8")
    assert load_lexicon(text)["color_synonyms"]["grey"] == "gray"
    with pytest.raises(SpecError, match=r"\[color_synonyms\] 'grey' = 'teal' must be a str in"):
        load_lexicon(text.replace('"grey" = "gray"', '"grey" = "teal"'))
    with pytest.raises(SpecError, match=r"lexicon.toml \[relations\] 'beside' is not 'unsupported'"):
        load_lexicon(text.replace('"next to" = [', '"beside" = ['))


def test_cli_misses_option_refuses_a_negative_number(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agents.cli import app

    res = CliRunner().invoke(app, ["bench", "decompose", "--benchmarks", str(tmp_path), "--long", "0",
                                   "--misses", "-1"])
    assert res.exit_code != 0 and "--misses=-1 is negative" in res.output
