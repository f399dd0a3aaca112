"""SceneSim pixels and critic feedback are byte-identical to the reference digests of the base renderer.

The reference (``tests/data/pixel_reference.json``) was written by ``python -m tests.pixel_reference`` on the
commit before the speed work (issue 16); caching and vectorising must not change a pixel or a verdict.
"""

from __future__ import annotations

import json

import pytest

from tests.pixel_reference import PATH, episode_digests, scene_digests


@pytest.fixture(scope="module")
def reference() -> dict[str, list[str]]:
    return json.loads(PATH.read_text())


def test_hand_made_scenes_render_and_judge_identically(reference: dict[str, list[str]]) -> None:
    got = scene_digests()
    bad = [i for i, (a, b) in enumerate(zip(got, reference["scenes"])) if a != b]
    assert len(got) == len(reference["scenes"]) and not bad, f"scenes differ at {bad[:10]}"


@pytest.mark.parametrize(("key", "env_id", "seed", "steps"),
                         [("v0", "poser_env/ImagePoser-v0", 7, 300), ("long", "poser_env/ImagePoserLong-v0", 11, 200)])
def test_episodes_render_and_judge_identically(reference: dict[str, list[str]], key: str, env_id: str, seed: int,
                                              steps: int) -> None:
    got = episode_digests(env_id, seed, steps)
    bad = [i for i, (a, b) in enumerate(zip(got, reference[key])) if a != b]
    assert not bad, f"{key}: first difference at step {bad[0]}: {got[bad[0]]} vs {reference[key][bad[0]]}"
