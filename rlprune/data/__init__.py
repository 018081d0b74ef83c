"""Tasks and suites without any RL machinery: generated tasks, JSONL loading, answer matching and
the real essays long-context tasks hide their facts in. Evaluation, training and output-side
reduction all read from here; nothing in it imports gymnasium.
"""

from rlprune.data.generators import generate_suite, generate_task
from rlprune.data.tasks import KINDS, SPLITS, Task, answer_correct, load_jsonl

__all__ = ["KINDS", "SPLITS", "Task", "answer_correct", "generate_suite", "generate_task", "load_jsonl"]
