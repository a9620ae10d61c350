"""Corpus scans: streaming per-neuron statistics, checkpoints, backends."""

from neurodbg.scan.runner import ScanSummary, scan
from neurodbg.scan.settings import ScanSettings

__all__ = ["ScanSettings", "ScanSummary", "scan"]
