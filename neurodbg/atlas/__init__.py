"""The neuron atlas: a SQLite store of what every neuron does. All of the atlas's SQL
lives in this package (store, records, descriptions, writer, export)."""

from neurodbg.atlas.records import NeuronRecord, info, neuron, parse_neuron_id
from neurodbg.atlas.store import AtlasStore

__all__ = ["AtlasStore", "NeuronRecord", "info", "neuron", "parse_neuron_id"]
