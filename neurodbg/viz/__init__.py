"""matplotlib figures (PNG), drawn off-screen."""

from neurodbg.viz.figures import bar_chart, heatmap

__all__ = ["bar_chart", "heatmap"]
