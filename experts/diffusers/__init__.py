"""Real experts: diffusers pipelines kept resident on an accelerator.

- :class:`DiffusersExpert` - text-to-image, image-to-image, InstructPix2Pix and inpainting behind the
  shared :class:`poser_env.core.expert.Expert` contract (``expert(command, image, seed=...)``);
- :func:`load_diffusers_experts` - build them from a registry TOML (default: the packaged ``registry.toml``
  of common models with recommended settings, VRAM and cost estimates);
- :class:`ResidencyManager` - pipelines stay on the device under a byte budget, LRU eviction, shared weights;
- :func:`batch_call` / :class:`BatchedExpert` - several envs' requests as one pipeline call;
- :class:`OutputCache` / :class:`CachedExpert` - content-addressed on-disk output cache.

Importing this package does not import torch or diffusers; they load on first use
(``pip install "image-poser[diffusers]"``).
"""

from experts.diffusers.batching import BatchedExpert, as_request, batch_call
from experts.diffusers.cache import CachedExpert, CacheEntry, OutputCache, cache_key
from experts.diffusers.expert import (
    DEFAULT_OPS,
    DEFAULT_REGISTRY,
    DiffusersExpert,
    ExpertRequest,
    diffusers_registry,
    load_diffusers_experts,
    shared_manager,
    target_mask,
)
from experts.diffusers.residency import TASKS, MemoryReport, PipelineSpec, ResidencyManager

__all__ = [
    "DEFAULT_OPS",
    "DEFAULT_REGISTRY",
    "TASKS",
    "BatchedExpert",
    "CacheEntry",
    "CachedExpert",
    "DiffusersExpert",
    "ExpertRequest",
    "MemoryReport",
    "OutputCache",
    "PipelineSpec",
    "ResidencyManager",
    "as_request",
    "batch_call",
    "cache_key",
    "diffusers_registry",
    "load_diffusers_experts",
    "shared_manager",
    "target_mask",
]
