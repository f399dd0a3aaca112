"""Critics: structured feedback on an image against a prompt spec (pixels only), and the judge."""

from poser_env.core.feedback import Critic, CriticError, Detection, Feedback, Verdict

__all__ = ["Critic", "CriticError", "Detection", "Feedback", "Verdict"]
