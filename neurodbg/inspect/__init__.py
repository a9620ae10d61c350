"""Anatomy: module tree, parameter counts from configs, memory bills, tokenizer facts."""

from neurodbg.inspect.memory import MemoryBill, inference_bill, measure_saved_bytes, training_bill
from neurodbg.inspect.params import ParamCount, count_from_config, count_module, load_config
from neurodbg.inspect.shapes import Shapes, shapes_of
from neurodbg.inspect.tokenizer_facts import TokenizerFacts, tokenizer_facts
from neurodbg.inspect.tree import Node, build_tree, probe_shapes, render_lines

__all__ = ["MemoryBill", "Node", "ParamCount", "Shapes", "TokenizerFacts", "build_tree", "count_from_config",
           "count_module", "inference_bill", "load_config", "measure_saved_bytes", "probe_shapes",
           "render_lines", "shapes_of", "tokenizer_facts", "training_bill"]
