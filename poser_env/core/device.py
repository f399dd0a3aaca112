"""Device and dtype rules shared by every model the env loads (experts, critics, decomposer, detector).

One implementation of the checks that used to exist twice with different rules (``critic/_hf.py`` refused
``"fp16"``, ``experts/diffusers/residency.py`` accepted it). The integrator moves this module to
``poser_env/core/device.py``; nothing here imports torch at module level.

- :func:`check_device` - a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...).
- :func:`check_dtype` - a dtype name (aliases ``fp16``/``half``/``bf16``/``fp32``, any case) or a
  ``torch.dtype``, returned as its canonical name; ``"auto"`` only where the caller allows it.
- :func:`default_dtype` - the dtype a model runs in when the user gave none: float32 on CPU, the model
  card's dtype (``cuda_dtype``) on accelerators.
- :func:`torch_dtype` - the ``torch.dtype`` of a name (imports torch).
- :func:`is_oom` / :func:`retry_on_oom` - the one out-of-memory test and evict-and-retry loop.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "DTYPES",
    "check_device",
    "check_dtype",
    "default_dtype",
    "device_type",
    "dtype_kwargs",
    "is_oom",
    "needs_torchvision",
    "retry_on_oom",
    "torch_dtype",
    "torchvision_hint",
]

#: Accepted dtype spellings (lower case) -> canonical name.
DTYPES: dict[str, str] = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
_DEVICE_RE = re.compile(r"^(cpu|meta|(cuda|mps|xpu|npu|hpu)(:\d+)?)$")
T = TypeVar("T")


def check_device(device: Any, arg: str = "device") -> str:
    """Validate a torch device string without importing torch; returns it stripped and lower-cased.

    Raises:
        ValueError: naming ``arg``, the value and the accepted forms.
    """
    if not isinstance(device, str) or not _DEVICE_RE.match(device.strip().lower()):
        raise ValueError(f"{arg}={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or 'mps'.")
    return device.strip().lower()


def device_type(device: str) -> str:
    """``"cuda"`` for ``"cuda:1"``, ``"cpu"`` for ``"cpu"``... (no torch import)."""
    return check_device(device).split(":")[0]


def check_dtype(dtype: Any, arg: str = "dtype", *, allow_auto: bool = False) -> str:
    """Canonical dtype name (``"float32"``, ``"float16"``, ``"bfloat16"``, or ``"auto"`` when allowed).

    Accepts the names of :data:`DTYPES` in any case and ``torch.float32``/``float16``/``bfloat16``.

    Raises:
        ValueError: naming ``arg``, the value and the accepted names.
    """
    choices = "'float32', 'float16' (fp16), 'bfloat16' (bf16)" + (", 'auto'" if allow_auto else "")
    if isinstance(dtype, str):
        low = dtype.strip().lower()
        if allow_auto and low == "auto":
            return "auto"
        if low in DTYPES:
            return DTYPES[low]
    elif type(dtype).__name__ == "dtype" and type(dtype).__module__ == "torch":
        name = str(dtype).removeprefix("torch.")
        if name in DTYPES:
            return DTYPES[name]
    raise ValueError(f"{arg}={dtype!r} is not supported; use one of {choices} or a torch.dtype of those "
                     "(float32 on CPU).")


def default_dtype(dtype: Any, device: str, cuda_dtype: str = "float16", *, arg: str = "dtype") -> str:
    """The dtype a model loads in: ``dtype`` when given, else float32 on CPU and ``cuda_dtype`` (the model
    card's half-precision dtype) on any accelerator.

    Args:
        dtype: The user's choice, or None for the default.
        device: Torch device string.
        cuda_dtype: The card's dtype on accelerators (``"float16"`` or ``"bfloat16"``).
        arg: Argument name for error messages.
    """
    if dtype is not None:
        return check_dtype(dtype, arg, allow_auto=True)
    return "float32" if device_type(device) in ("cpu", "meta") else check_dtype(cuda_dtype, "cuda_dtype")


def torch_dtype(name: Any) -> Any:
    """The ``torch.dtype`` of a dtype accepted by :func:`check_dtype` (``"auto"`` stays ``"auto"``)."""
    canon = check_dtype(name, allow_auto=True)
    if canon == "auto":
        return "auto"
    import torch

    return getattr(torch, canon)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (``torch.OutOfMemoryError`` or its message)."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency of every model backend
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def retry_on_oom(
    run: Callable[[], T], evict: Callable[[], Any], on_retry: Callable[[], Any] | None = None,
    *, passthrough: tuple[type[BaseException], ...] = (),
) -> T:
    """Run ``run()``; on an out-of-memory error call ``evict()`` (free what can be freed) and run it once more.

    A second out-of-memory error (or any other error) propagates; callers turn it into their own message.
    ``on_retry`` is called before the retry (e.g. to count retries). Errors of a ``passthrough`` type are
    never retried (e.g. an error that already reports a failed retry).
    """
    try:
        return run()
    except Exception as exc:
        if isinstance(exc, passthrough) or not is_oom(exc):
            raise
    if on_retry is not None:
        on_retry()
    evict()
    return run()


def torchvision_hint() -> str:
    """The pip command installing the torchvision that matches the installed torch (CPU or CUDA build)."""
    try:
        import torch

        version = torch.__version__
        cuda = getattr(torch.version, "cuda", None)
    except ImportError:  # pragma: no cover - torch is checked before any model loads
        return "pip install torchvision"
    base, _, local = version.partition("+")
    parts = base.split(".")
    try:
        tv = f"0.{int(parts[1]) + 15}.{parts[2] if len(parts) > 2 else 0}" if parts[0] == "2" else None
    except (ValueError, IndexError):
        tv = None
    pin = f"torchvision=={tv}" if tv else "torchvision"
    if cuda:
        tag = "cu" + str(cuda).replace(".", "")
    elif local.startswith(("cpu", "cu", "rocm")):
        tag = local
    else:
        return f"pip install {pin}"
    return f"pip install {pin} --index-url https://download.pytorch.org/whl/{tag}"


def needs_torchvision(exc: BaseException) -> bool:
    """Whether a load failure comes from a missing torchvision (Qwen2-VL-family processors, fast image and
    video processors): the error chain names torchvision, or torchvision is absent and the failure is in
    transformers' video-processor registry (which only exists with torchvision)."""

    if importlib.util.find_spec("torchvision") is None:
        text = " ".join(str(e) for e in _chain(exc))
        if "VIDEO_PROCESSOR" in text or "VideoProcessor" in text:
            return True
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ImportError) and "torchvision" in (str(e) + str(getattr(e, "name", ""))):
            return True
        if "torchvision" in str(e) and ("install" in str(e).lower() or "requires" in str(e).lower()):
            return True
        e = e.__cause__ or e.__context__
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = (int("".join(c for c in p if c.isdigit()) or 0) for p in transformers.__version__.split(".")[:2])
    return major, minor


def dtype_kwargs(library: str, dtype: Any) -> dict[str, Any]:
    """The ``from_pretrained`` keyword that sets the dtype in the installed ``library`` (``"transformers"`` or
    ``"diffusers"``): ``{"dtype": ...}`` where the library honours it, else ``{"torch_dtype": ...}``.

    transformers reads ``dtype=`` from 4.56 (``torch_dtype`` deprecated); diffusers from the release that
    added ``_resolve_dtype`` (huggingface/diffusers#14205). Older releases take ``dtype=`` as an unknown
    keyword and load float32 without a word, hence this check.
    """
    value = torch_dtype(dtype)
    if library == "transformers":
        return {"dtype": value} if _transformers_version() >= (4, 56) else {"torch_dtype": value}
    if library == "diffusers":
        from diffusers.pipelines import pipeline_utils

        return {"dtype": value} if hasattr(pipeline_utils, "_resolve_dtype") else {"torch_dtype": value}
    raise ValueError(f"library={library!r} must be 'transformers' or 'diffusers'.")
