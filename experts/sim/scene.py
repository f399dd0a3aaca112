"""SceneSim's world state: a scene graph of objects on a background in a style.

The scene graph is ground truth. Experts build and edit it, the renderer turns it into pixels, the judge
reads it; critics only ever see the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from poser_env.core.spec import BACKGROUNDS, COLORS, PATTERNS, SIZES, STYLES

__all__ = ["Artifact", "Scene", "SceneObject"]


@dataclass(frozen=True)
class SceneObject:
    """One drawn object.

    Attributes:
        noun: Singular noun (its glyph derives from a stable hash of this string).
        color: One of :data:`poser_env.core.spec.COLORS`.
        pattern: One of :data:`poser_env.core.spec.PATTERNS`.
        size: One of :data:`poser_env.core.spec.SIZES` (the box's scale class).
        box: (x1, y1, x2, y2) in pixels of the scene canvas, y down.
        glyph_noise: 0..1, how far the drawn silhouette departs from the noun's canonical glyph
            (sloppy experts draw ambiguous shapes that a detector may confuse).
        glyph_variant: -1 (default): the silhouette's perturbation is seeded by the object's pixel box, so every
            object has a shape of its own; k >= 0: the noun's shared variant k (seeded by noun and k, drawn from
            one cached raster per noun, noise and k, resampled to the box; experts with a ``glyph_variants``
            card draw these, a bounded set of shapes the renderer caches).
    """

    noun: str
    color: str
    pattern: str = "plain"
    size: str = "medium"
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    glyph_noise: float = 0.0
    glyph_variant: int = -1

    def __post_init__(self) -> None:
        if isinstance(self.glyph_variant, bool) or not isinstance(self.glyph_variant, int) or self.glyph_variant < -1:
            raise ValueError(f"SceneObject glyph_variant={self.glyph_variant!r} must be an int >= -1 "
                             "(-1: a shape of its own, k >= 0: the noun's shared variant k).")
        if self.color not in COLORS:
            raise ValueError(f"SceneObject color={self.color!r} must be one of {COLORS}.")
        if self.pattern not in PATTERNS:
            raise ValueError(f"SceneObject pattern={self.pattern!r} must be one of {PATTERNS}.")
        if self.size not in SIZES:
            raise ValueError(f"SceneObject size={self.size!r} must be one of {SIZES}.")
        x1, y1, x2, y2 = self.box
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f"SceneObject box={self.box!r} must satisfy x2 > x1 and y2 > y1.")

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) / 2.0, (y1 + y2) / 2.0)


@dataclass(frozen=True)
class Artifact:
    """A blemish left by an edit: a disc of noise at (x, y) with ``radius`` pixels and ``strength`` 0..1."""

    x: float
    y: float
    radius: float
    strength: float
    seed: int = 0


@dataclass(frozen=True)
class Scene:
    """A whole SceneSim image, before rendering.

    Attributes:
        width, height: Canvas size in pixels (64..512; default 128).
        background: One of :data:`poser_env.core.spec.BACKGROUNDS`.
        style: One of :data:`poser_env.core.spec.STYLES`.
        objects: The objects, back to front.
        artifacts: Blemishes from edits (lower fidelity).
        quality: Global rendering quality 0..1 of the expert that drew it (1 = clean).
        seed: Seed of the rendering noise.
        noise_bank: False (default): the degradation noise is drawn afresh from ``seed``; True: it is a window of a
            fixed Gaussian field of the canvas size, placed and flipped by ``seed`` (the same statistics, far cheaper;
            set by experts whose card has ``noise_bank = true``).
    """

    width: int = 128
    height: int = 128
    background: str = "plain"
    style: str = "photo"
    objects: tuple[SceneObject, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    quality: float = 1.0
    seed: int = 0
    history: tuple[str, ...] = field(default=(), compare=False)
    noise_bank: bool = False

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"Scene background={self.background!r} must be one of {BACKGROUNDS}.")
        if self.style not in STYLES:
            raise ValueError(f"Scene style={self.style!r} must be one of {STYLES}.")
        for arg, v in (("width", self.width), ("height", self.height)):
            if not isinstance(v, int) or not 64 <= v <= 512:
                raise ValueError(f"Scene {arg}={v!r} must be an int from 64 to 512 pixels.")
        if not 0.0 <= self.quality <= 1.0:
            raise ValueError(f"Scene quality={self.quality!r} must be in [0, 1].")
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "artifacts", tuple(self.artifacts))

    def with_objects(self, objects: tuple[SceneObject, ...]) -> Scene:
        return replace(self, objects=tuple(objects))


#: Side length of an object's box as a fraction of the canvas's shorter side, per size class.
#: Experts draw each object with a side in [0.9, 1.1] x this value; critics classify size from box
#: sides with the midpoints between classes as thresholds.

