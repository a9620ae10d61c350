"""The training debugger: watch a run, stop at the first bad step, replay it, and say
in words why accuracy will not go up."""

from neurodbg.train.breakpoints import BreakOn, Hit
from neurodbg.train.diagnose import Finding, Thresholds, diagnose
from neurodbg.train.replay import Replay, replay
from neurodbg.train.watch import Watcher, watch

__all__ = ["BreakOn", "Finding", "Hit", "Replay", "Thresholds", "Watcher", "diagnose", "replay", "watch"]
