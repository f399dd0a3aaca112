"""sRGB -> CIELAB (D65, 2 degree observer): one implementation for every critic and judge.

Standard constants: the IEC 61966-2-1 sRGB transfer curve, the sRGB -> XYZ matrix of IEC 61966-2-1 / Lindbloom
(seven digits), the D65 white point (0.95047, 1.0, 1.08883) and the CIE's exact epsilon = 216/24389 and
kappa = 24389/27. Checked against published values (white -> L 100, pure red -> (53.24, 80.09, 67.20), ...).
"""

from __future__ import annotations

import numpy as np

__all__ = ["D65_WHITE", "SRGB_TO_XYZ", "srgb_to_lab"]

#: Linear sRGB -> CIE XYZ (D65).
SRGB_TO_XYZ: np.ndarray = np.array([[0.4124564, 0.3575761, 0.1804375],
                                    [0.2126729, 0.7151522, 0.0721750],
                                    [0.0193339, 0.1191920, 0.9503041]])
SRGB_TO_XYZ.flags.writeable = False
#: Reference white D65 (X, Y, Z), Y = 1.
D65_WHITE: np.ndarray = np.array([0.95047, 1.0, 1.08883])
D65_WHITE.flags.writeable = False
_EPS = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of sRGB colours.

    Args:
        rgb: ``(..., 3)`` array of sRGB values in 0..255 (any numeric dtype).

    Returns:
        ``(..., 3)`` float64 array: L in [0, 100], a and b roughly in [-128, 127].

    Raises:
        ValueError: the last axis is not 3 long.
    """
    c = np.asarray(rgb, dtype=np.float64)
    if c.ndim == 0 or c.shape[-1] != 3:
        raise ValueError(f"rgb of shape {c.shape} must have a last axis of 3 (R, G, B in 0..255).")
    c = c / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ SRGB_TO_XYZ.T / D65_WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16.0) / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                    axis=-1)
