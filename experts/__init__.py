"""Experts: the image generators and editors a policy orchestrates (SceneSim and diffusers backends)."""

from poser_env.core.commands import OPS
from poser_env.core.expert import EXPERT_KINDS, Expert, ExpertError, ExpertOutput

__all__ = ["EXPERT_KINDS", "OPS", "Expert", "ExpertError", "ExpertOutput"]
