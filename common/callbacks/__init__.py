"""Lightning callbacks every cvinw run gets (see common.cli)."""

from common.callbacks.checkpoint import GracefulInterrupt, LastStateCheckpoint, TrainingInterrupted
from common.callbacks.data import SkippedSamples
from common.callbacks.guards import NonFiniteLossError, NonFiniteLossGuard
from common.callbacks.progress import StepProgressBar
from common.callbacks.tracking import ParameterBudget, RunInfoCheckpoint, Throughput

__all__ = ["GracefulInterrupt", "LastStateCheckpoint", "NonFiniteLossError", "NonFiniteLossGuard", "ParameterBudget",
           "RunInfoCheckpoint", "SkippedSamples", "StepProgressBar", "Throughput", "TrainingInterrupted"]
