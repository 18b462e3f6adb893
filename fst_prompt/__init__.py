"""fst-prompt: Fast-Slow Training for LLMs — GEPA-evolved prompts (fast weights) + GRPO (slow weights).

Importing the package is cheap: torch, transformers and TRL load only when a model is needed.
"""

import os

# litellm (under DSPy) fetches a price list at import and the HF hub is unreachable here; both must
# stay offline. Set before dspy is imported; a user's explicit setting wins.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from fst_prompt.gym import gym_task  # noqa: E402
from fst_prompt.task import Feedback, Task, TaskError  # noqa: E402

__all__ = ["Feedback", "Task", "TaskError", "gym_task"]
__version__ = "0.1.0"
