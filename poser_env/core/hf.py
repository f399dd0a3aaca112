"""Shared lazy loading of ``transformers`` models (VLM critic, CLIP critic, LLM decomposer).

:class:`HFModel` holds what the three wrappers have in common: the checked constructor arguments
(model folder or hub id, torch device, dtype, ``local_files_only``, ``trust_remote_code``), the
``loaded`` property, ``__repr__`` and :meth:`HFModel.load`, which imports torch/transformers (failing
with the ``pip install`` to run), calls ``from_pretrained`` for a preprocessor and a model and turns a
failure into an error naming the model and how to fetch it (:func:`fetch_hint`). Nothing is imported
or loaded before :meth:`HFModel.load`; torch is not imported to check arguments.
"""

from __future__ import annotations

import gc
import os
from typing import Any, ClassVar, Self, TypedDict

from poser_env.core import device as devices
from poser_env.core.feedback import CriticError
from poser_env.core.optional import require

__all__ = [
    "HFModel", "HFOptions", "ModelLoadError", "check_device", "check_dtype", "check_model_id", "fetch_hint",
    "free_accelerator_memory", "needs_torchvision", "resolve_dtype", "torchvision_hint",
]


class ModelLoadError(CriticError):
    """A model or processor could not be loaded; the message names the id/path and how to fetch it."""


def check_device(device: str, arg: str = "device") -> str:
    """Validate a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...) without importing torch
    (the shared rule of :func:`poser_env.core.device.check_device`)."""
    return devices.check_device(device, arg)


def check_dtype(dtype: Any, arg: str = "dtype") -> str:
    """Canonical dtype name: ``"float32"``, ``"float16"``, ``"bfloat16"`` (aliases such as ``"fp16"``, any case,
    or a ``torch.dtype``) or ``"auto"`` (the shared rule of :func:`poser_env.core.device.check_dtype`)."""
    return devices.check_dtype(dtype, arg, allow_auto=True)


def resolve_dtype(dtype: Any) -> Any:
    """The torch dtype (or "auto") for a value accepted by :func:`check_dtype`; imports torch."""
    return devices.torch_dtype(dtype)


#: The pip command installing the torchvision matching the installed torch (shared rule).
torchvision_hint = devices.torchvision_hint
#: Whether a load failure comes from a missing torchvision (shared rule).
needs_torchvision = devices.needs_torchvision


def check_model_id(model: Any, arg: str = "model") -> str:
    """Validate a model folder path or hub id (non-empty string)."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"{arg}={model!r} must be a local model folder or a hub id such as 'llava-hf/llava-1.5-7b-hf'.")
    return model


def fetch_hint(model: str, local_files_only: bool) -> str:
    """How to obtain a model that failed to load (for error messages)."""
    if os.path.isabs(model) or model.startswith((".", "~")) or os.path.isdir(model):
        return (
            f"the folder {model!r} must hold a model saved with save_pretrained(); download one with "
            f"`huggingface-cli download <hub-id> --local-dir {model}`."
        )
    hint = f"fetch it with `huggingface-cli download {model} --local-dir <folder>` and pass the folder"
    if local_files_only:
        hint += ", or pass local_files_only=False to download it from the hub"
    return hint + "."


def free_accelerator_memory(device: str) -> None:
    """Collect garbage and return the CUDA caching allocator's free blocks to the driver (no-op off CUDA)."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class HFOptions(TypedDict, total=False):
    """The keyword options every :class:`HFModel` subclass accepts (``**options``); see :class:`HFModel`."""

    device: str
    dtype: Any
    local_files_only: bool
    trust_remote_code: bool


class HFModel:
    """Base of a wrapper around one lazily loaded ``transformers`` model and its preprocessor.

    Subclasses set the class attributes below, implement :meth:`_accept`, which checks and stores the
    preprocessor (and anything derived from it) before the model is moved to ``device``, and take the
    options below as ``**options: Unpack[HFOptions]`` passed on to ``super().__init__``.

    Args:
        model: Local folder (saved with ``save_pretrained``) or hub id.
        device: Torch device, e.g. ``"cpu"`` (default) or ``"cuda:0"``.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` (aliases ``fp16``/``bf16``), ``"auto"`` or a
            ``torch.dtype``; None (default) is float32 on CPU and :attr:`cuda_dtype` (the model card's dtype)
            on an accelerator, so a 7B VLM never silently loads in float32 (~30 GB) on a GPU.
        local_files_only: Never touch the network (default True).
        trust_remote_code: Allow custom model code from the hub (default False).

    Raises:
        ValueError: a bad argument (named in the message).
    """

    #: ``transformers`` class names of the preprocessor and of the model (``Auto*`` classes).
    preprocessor_class: ClassVar[str] = "AutoProcessor"
    model_class: ClassVar[str] = "AutoModel"
    #: What the model is, for the load error ("VLM critic model").
    model_role: ClassVar[str] = "model"
    #: The exception raised when ``from_pretrained`` fails.
    load_error: ClassVar[type[Exception]] = ModelLoadError
    #: dtype on accelerators when ``dtype=None`` (what the model cards of this kind of model recommend).
    cuda_dtype: ClassVar[str] = "bfloat16"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str = "cpu",
        dtype: Any = None,
        local_files_only: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_id = check_model_id(model)
        self.device = check_device(device)
        self.dtype = devices.default_dtype(dtype, self.device, self.cuda_dtype)
        self.local_files_only = bool(local_files_only)
        self.trust_remote_code = bool(trust_remote_code)
        self._model: Any = None

    def _repr_extra(self) -> str:
        """Extra ``, key=value`` fields shown by ``repr`` between the dtype and ``loaded``."""
        return ""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_id!r}, device={self.device!r}, dtype={self.dtype!r}"
            f"{self._repr_extra()}, loaded={self.loaded})"
        )

    @property
    def loaded(self) -> bool:
        """True once the model and its preprocessor are in memory."""
        return self._model is not None

    def close(self) -> None:
        """Free the model (and the accelerator's cached memory); idempotent. It loads again on next use."""
        if self._model is None:
            return
        self._model = None
        free_accelerator_memory(self.device)

    def device_bytes(self) -> int:
        """Parameter + buffer bytes of the loaded model (0 before :meth:`load`), for memory budgets."""
        if self._model is None:
            return 0
        return sum(t.numel() * t.element_size() for t in [*self._model.parameters(), *self._model.buffers()])

    def _accept(self, preprocessor: Any, model: Any) -> None:
        """Check the freshly loaded pair (raising :attr:`load_error`-style errors) and store the preprocessor."""
        raise NotImplementedError

    def load(self) -> Self:
        """Load the preprocessor and model now (otherwise done on first use). Returns self.

        Raises:
            MissingExtraError: transformers or torch is not installed (names the pip command).
            ModelLoadError: the model cannot be found or loaded (names the id/path and how to fetch it);
                the LLM decomposer raises OSError instead.
        """
        if self._model is not None:
            return self
        require("torch", "diffusers")
        transformers = require("transformers", "diffusers")
        kw = {"local_files_only": self.local_files_only, "trust_remote_code": self.trust_remote_code}
        try:
            preprocessor = getattr(transformers, self.preprocessor_class).from_pretrained(self.model_id, **kw)
            model = getattr(transformers, self.model_class).from_pretrained(
                self.model_id, **devices.dtype_kwargs("transformers", self.dtype), **kw
            )
        except (OSError, ValueError, KeyError, ImportError) as exc:
            if needs_torchvision(exc):
                raise self.load_error(
                    f"cannot load the {self.model_role} {self.model_id!r}: its processor needs torchvision, which is "
                    f"not installed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).\nFix: "
                    f"{torchvision_hint()}"
                ) from exc
            raise self.load_error(
                f"cannot load the {self.model_role} {self.model_id!r} (local_files_only={self.local_files_only}): "
                f"{exc}\nFix: {fetch_hint(self.model_id, self.local_files_only)}"
            ) from exc
        self._accept(preprocessor, model)
        model.to(self.device)
        model.eval()
        self._model = model
        return self
