"""Experts: the image generators and editors a policy orchestrates (SceneSim and diffusers backends)."""

from experts.base import EXPERT_KINDS, OPS, Expert, ExpertError, ExpertOutput

__all__ = ["EXPERT_KINDS", "OPS", "Expert", "ExpertError", "ExpertOutput"]
