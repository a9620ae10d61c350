"""Analyses over traced activations (one analysis per file)."""

from neurodbg.analyze.top_neurons import NeuronHit, top_neurons

__all__ = ["NeuronHit", "top_neurons"]
