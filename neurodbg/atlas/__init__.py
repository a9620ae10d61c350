"""The neuron atlas: a SQLite store of what every neuron does."""

from neurodbg.atlas.records import NeuronRecord, export, info, neuron, parse_neuron_id
from neurodbg.atlas.store import AtlasStore

__all__ = ["AtlasStore", "NeuronRecord", "export", "info", "neuron", "parse_neuron_id"]
