"""The expert registry: names -> experts, loaded from the shipped SceneSim cards and entry points.

``EXPERTS`` holds every SceneSim expert of ``experts/sim/cards.toml`` (behaviour numbers in ``kwargs``,
descriptive facts in ``card``); third parties add theirs through the ``image_poser.experts`` entry-point
group or :meth:`poser_env.core.registry.Registry.load_toml`. Building is cheap: nothing heavy happens until an
expert's first call.

Example::

    from experts.registry import make_expert, default_sim_experts
    layout = make_expert("sim/layout", canvas_size=256)
    experts = default_sim_experts()          # T2I experts first, then editors, fixed order
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from experts.sim.experts import SimExpert, SimProfile
from poser_env.core.expert import Expert
from poser_env.core.registry import Registry, RegistryError, import_target

__all__ = [
    "CARDS_PATH",
    "CARD_VERSION",
    "EXPERTS",
    "SIM_EXPERT_NAMES",
    "default_expert_names",
    "default_sim_experts",
    "make_expert",
    "model_card_table",
]

#: The shipped SceneSim registry file.
CARDS_PATH: Path = Path(__file__).resolve().parent / "sim" / "cards.toml"
#: Version of the shipped cards (bumped on any change of behaviour).
CARD_VERSION: int = int(tomllib.loads(CARDS_PATH.read_text(encoding="utf-8"))["card_version"])

EXPERTS: Registry[Expert] = Registry("expert", entry_point_group="image_poser.experts")
#: SceneSim experts in the fixed default order: text-to-image first, then editors.
SIM_EXPERT_NAMES: tuple[str, ...] = tuple(EXPERTS.load_toml(CARDS_PATH))


def _is_sim(target: str) -> bool:
    obj = import_target(target)
    return isinstance(obj, type) and issubclass(obj, SimExpert)


def make_expert(name: str, **overrides: Any) -> Expert:
    """Build the expert registered as ``name``; ``overrides`` replace card numbers or set ``canvas_size``.

    Raises:
        RegistryError: an unknown name (with "did you mean ...").
        ValueError: a bad override (named in the message).
    """
    entry = EXPERTS.entry(name)
    if not _is_sim(entry.target):
        expert = EXPERTS.build(name, **overrides)
    else:  # SceneSim experts also get their registry name and descriptive card
        factory = import_target(entry.target)
        expert = factory(**{"name": name, "card": dict(entry.card), **entry.kwargs, **overrides})
    if not isinstance(expert, Expert):
        raise RegistryError(f"expert name={name!r}: target {entry.target!r} built a {type(expert).__name__}, not an Expert.")
    return expert


def default_expert_names() -> tuple[str, ...]:
    """Names of the shipped SceneSim experts, text-to-image first (the env's default action set)."""
    return SIM_EXPERT_NAMES


def default_sim_experts(canvas_size: int = 128) -> list[Expert]:
    """One of each shipped SceneSim expert, in :data:`SIM_EXPERT_NAMES` order, drawing on ``canvas_size``."""
    return [make_expert(n, canvas_size=canvas_size) for n in SIM_EXPERT_NAMES]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return str(v)


def model_card_table(names: tuple[str, ...] | None = None) -> str:
    """A markdown table of the model cards of ``names`` (default: the shipped SceneSim experts)."""
    names = SIM_EXPERT_NAMES if names is None else tuple(names)
    cols = [
        ("expert", None), ("analogue", "card.analogue"), ("ops", "ops"), ("cost", "cost"),
        ("max entities", "max_entities"), ("count acc. (<= limit / beyond)", "count"),
        ("colour binding (decay)", "binding"), ("relation acc.", "relation_accuracy"),
        ("attr. leakage", "attribute_leakage"), ("edit acc.", "edit_accuracy"), ("artifacts", "artifacts"),
        ("fidelity", "fidelity"), ("aesthetic", "card.aesthetic"), ("summary", "card.summary"),
    ]
    rows = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for n in names:
        e = EXPERTS.entry(n)
        prof = SimProfile(**{k: v for k, v in e.kwargs.items() if k in SimProfile.__dataclass_fields__})
        cells = []
        for _, key in cols:
            if key is None:
                cells.append(f"`{n}`")
            elif key.startswith("card."):
                cells.append(_fmt(e.card.get(key[5:], "")))
            elif key == "binding":
                cells.append(f"{prof.color_binding:g} ({prof.binding_decay:g})")
            elif key == "count":
                cells.append(f"{prof.count_accuracy:g} (<= {prof.count_limit}) / {prof.count_accuracy_beyond:g}")
            else:
                cells.append(_fmt(getattr(prof, key)))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + f"\n\nCards version {CARD_VERSION} (`experts/sim/cards.toml`)."
