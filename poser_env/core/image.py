"""Image checks shared by experts, critics and the env: HxWx3 uint8 RGB arrays, values 0..255."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BLANK_STD", "check_image", "is_blank"]

#: An image whose pixel standard deviation (0..255 units) is below this is blank (a constant colour).
BLANK_STD: float = 0.5

def check_image(image: Any, arg: str = "image") -> np.ndarray:
    """Validate an HxWx3 uint8 image and return it; raise ValueError naming ``arg`` otherwise."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{arg} must be a numpy array of shape (H, W, 3) and dtype uint8, got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{arg} must have shape (H, W, 3) and dtype uint8, got shape {image.shape} dtype {image.dtype}; "
            "convert with np.asarray(pil_image.convert('RGB'), dtype=np.uint8)."
        )
    return image


def is_blank(image: np.ndarray, threshold: float = BLANK_STD) -> bool:
    """True when ``image``'s pixel standard deviation (0..255 units) is below ``threshold`` (>= 0)."""
    return float(np.asarray(image).std()) < threshold
