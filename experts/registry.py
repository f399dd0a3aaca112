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

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from experts.sim.experts import SimExpert, SimProfile
from poser_env.core.commands import OPS
from poser_env.core.expert import Expert
from poser_env.core.registry import Registry, RegistryError, import_target

__all__ = [
    "CARDS_PATH",
    "CARD_VERSION",
    "EXPERTS",
    "REQUIRED_BY_OP",
    "REQUIRED_FIELDS",
    "SIM_EXPERT_NAMES",
    "check_sim_card",
    "default_expert_names",
    "default_sim_experts",
    "load_sim_cards",
    "make_expert",
    "model_card_table",
]

#: The shipped SceneSim registry file.
CARDS_PATH: Path = Path(__file__).resolve().parent / "sim" / "cards.toml"

#: Card fields every SceneSim expert must set (a missing one is an error naming the field and the file: a card
#: without ``cost`` must not silently cost 1.0).
REQUIRED_FIELDS: tuple[str, ...] = ("cost", "ops", "fidelity", "artifacts")
#: Further card fields an expert must set for each op it supports: the numbers that op reads. A card without
#: ``count_accuracy`` must not silently count perfectly.
REQUIRED_BY_OP: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "generate": ("max_entities", "entity_drop", "count_limit", "count_accuracy", "count_accuracy_beyond",
                 "color_binding", "binding_decay", "attribute_leakage", "attribute_accuracy", "relation_accuracy",
                 "scene_accuracy", "artifact_strength", "glyph_noise", "default_style"),
    "add": ("count_accuracy", "color_binding", "attribute_accuracy", "relation_accuracy"),
    "remove": ("edit_accuracy",),
    "recolor": ("edit_accuracy", "attribute_leakage"),
    "retexture": ("edit_accuracy", "attribute_leakage"),
    "resize": ("edit_accuracy",),
    "move": ("edit_accuracy", "relation_accuracy"),
    "background": ("edit_accuracy",),
    "restyle": ("edit_accuracy", "drift"),
    "refine": ("artifact_removal", "drift"),
})


def check_sim_card(name: str, kwargs: Mapping[str, Any], source: str) -> None:
    """Check one SceneSim card's behaviour numbers: ``ops`` a list of known ops, every required field present.

    Raises:
        RegistryError: naming the field, the entry and the file.
    """
    where = f"SceneSim card [{name}] in {source}"
    ops = kwargs.get("ops")
    if "ops" not in kwargs:
        raise RegistryError(f"{where} has no 'ops'; add e.g. ops = [\"generate\"].")
    if isinstance(ops, str) or not isinstance(ops, (list, tuple)) or not ops or not all(
            isinstance(o, str) for o in ops):
        raise RegistryError(
            f"{where}: ops={ops!r} must be a non-empty list of op names, e.g. ops = [{str(ops)!r}] "
            if isinstance(ops, str) else f"{where}: ops={ops!r} must be a non-empty list of op names, "
            f"e.g. ops = [\"generate\"]; known ops: {list(OPS)}."
        )
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise RegistryError(f"{where}: ops entries {bad} are not ops; known ops: {list(OPS)}.")
    missing = [f for f in REQUIRED_FIELDS if f not in kwargs]
    for op in ops:
        missing += [f for f in REQUIRED_BY_OP.get(op, ()) if f not in kwargs and f not in missing]
    if missing:
        raise RegistryError(
            f"{where} is missing required field(s) {missing} (needed by ops {list(ops)}); set each in its kwargs "
            "table (see experts.sim.experts.SimProfile for their meaning)."
        )


def load_sim_cards(path: str | os.PathLike[str], *, base: Registry[Expert] | None = None) -> Registry[Expert]:
    """A registry of the SceneSim cards in the TOML file ``path`` (checked with :func:`check_sim_card`).

    Used by the env's ``cards=`` argument, so that a custom card file applies to one env, not the whole process.
    ``base``: a registry whose entries are copied first (the file's entries must not reuse their names).

    Raises:
        RegistryError: a missing or malformed file, a missing required field (named with the file).
    """
    reg: Registry[Expert] = Registry("expert", base=Expert)
    if base is not None:
        for n in base.names():
            e = base.entry(n)
            reg.register(n, e.target, e.kwargs, e.card, source=e.source)
    before = set(reg.names())
    names = reg.load_toml(Path(path))
    for n in names:
        if n in before:
            continue
        e = reg.entry(n)
        if _is_sim(e.target):
            check_sim_card(n, e.kwargs, str(path))
    return reg


def _card_version(path: Path) -> int:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    v = data.get("card_version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise RegistryError(f"card file {str(path)!r}: card_version={v!r} must be an int; add card_version = 1.")
    return v


def _is_sim(target: str) -> bool:
    obj = import_target(target)
    return isinstance(obj, type) and issubclass(obj, SimExpert)


#: Version of the shipped cards (bumped on any change of behaviour).
CARD_VERSION: int = _card_version(CARDS_PATH)

#: The process-wide expert registry: the shipped SceneSim cards, then entry points (``image_poser.experts``).
EXPERTS: Registry[Expert] = Registry("expert", entry_point_group="image_poser.experts", base=Expert)
_SHIPPED: Registry[Expert] = load_sim_cards(CARDS_PATH)
for _name in _SHIPPED.names():
    _entry = _SHIPPED.entry(_name)
    EXPERTS.register(_name, _entry.target, _entry.kwargs, _entry.card, source=_entry.source)
#: SceneSim experts in the fixed default order: text-to-image first, then editors.
SIM_EXPERT_NAMES: tuple[str, ...] = tuple(_SHIPPED.names())


def make_expert(name: str, *, registry: Registry[Expert] | None = None, **overrides: Any) -> Expert:
    """Build the expert registered as ``name``; ``overrides`` replace card numbers or set ``canvas_size``.

    Args:
        name: A registry name (``"sim/layout"``).
        registry: Where to look it up (default: the process-wide :data:`EXPERTS`; an env with ``cards=`` passes
            its own, see :func:`load_sim_cards`).
        **overrides: Card numbers or constructor arguments.

    Raises:
        RegistryError: an unknown name (with "did you mean ..."), a target that is not an Expert subclass, a
            SceneSim card (from a plugin or a file) missing a required field.
        ValueError: a bad override (named in the message).
    """
    reg = EXPERTS if registry is None else registry
    entry = reg.entry(name)
    factory = reg.resolve(name)
    if isinstance(overrides.get("ops"), str):
        raise RegistryError(
            f"expert name={name!r}: ops={overrides['ops']!r} must be a list of op names, e.g. ops=[{overrides['ops']!r}]."
        )
    if isinstance(factory, type) and issubclass(factory, SimExpert):
        if entry.source.startswith("entry-point:"):
            check_sim_card(name, entry.kwargs, entry.source)  # plugin cards: the same required fields as files
        # SceneSim experts also get their registry name and descriptive card
        expert = factory(**{"name": name, "card": dict(entry.card), **entry.kwargs, **overrides})
    else:
        expert = factory(**{**entry.kwargs, **overrides})
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


def sim_cards(version: int) -> Registry[Expert]:  # TEMP stub until the world branch lands
    return EXPERTS
