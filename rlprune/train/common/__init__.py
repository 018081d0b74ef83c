"""What every training backend shares: the run folder, checkpoints, resume rules, validation
schedule, best keeping, progress, summary and export, and the :class:`Backend` protocol."""

from rlprune.train.common.backend import Backend
from rlprune.train.common.checkpoints import BestKeeper, load_checkpoint, save_checkpoint
from rlprune.train.common.finish import conclude_run, export, export_policy, finish_run
from rlprune.train.common.folder import RunFolderError, last_checkpoint, read_run_meta, read_state
from rlprune.train.common.loop import Session, next_multiple, train_run, warm_start
from rlprune.train.common.monitor import EpisodeWindow, Monitor, training_progress
from rlprune.train.common.resume import SAFE_ON_RESUME
from rlprune.train.common.setup import Run, start_run
from rlprune.train.common.validation import Evaluator, mean_defined

__all__ = [
    "SAFE_ON_RESUME",
    "Backend",
    "BestKeeper",
    "EpisodeWindow",
    "Evaluator",
    "Monitor",
    "Run",
    "RunFolderError",
    "Session",
    "conclude_run",
    "export",
    "export_policy",
    "finish_run",
    "last_checkpoint",
    "load_checkpoint",
    "mean_defined",
    "next_multiple",
    "read_run_meta",
    "read_state",
    "save_checkpoint",
    "start_run",
    "train_run",
    "training_progress",
    "warm_start",
]
