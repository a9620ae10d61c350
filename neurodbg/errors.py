"""Typed exceptions. Every bad input raises a subclass of NeurodbgError whose
message is one line a user can act on; the CLI prints it without a traceback."""

from __future__ import annotations


class NeurodbgError(Exception):
    """Base of every error neurodbg raises on purpose."""


class ModelLoadError(NeurodbgError):
    """A model source is missing, corrupt, or cannot be provisioned."""


class UnsupportedArchitectureError(NeurodbgError):
    """Canonical site names were asked of an architecture no adapter covers."""


class UnknownSiteError(NeurodbgError):
    """A site name or pattern matches nothing in the model."""


class NeuronIndexError(NeurodbgError, IndexError):
    """A neuron or token index lies outside the tensor it addresses."""


class PromptError(NeurodbgError, ValueError):
    """A prompt is empty or longer than the model accepts."""


class InterventionError(NeurodbgError, ValueError):
    """An intervention is malformed or cannot apply where it was aimed."""


class ConfigError(NeurodbgError, ValueError):
    """A config.json is missing, malformed, or of an unknown model type."""


class AtlasError(NeurodbgError):
    """An atlas directory is missing, not an atlas, corrupt, or from another scan."""


class AtlasMismatchError(AtlasError):
    """An atlas was asked to mix models, corpora or settings."""


class ExportError(AtlasError):
    """An atlas export was asked for layers or fields the atlas lacks, or its output cannot be written."""


class ScanMemoryError(NeurodbgError, MemoryError):
    """A scan's batch does not fit in the memory of the device it runs on."""


class NonFiniteError(NeurodbgError, ValueError):
    """A scanned neuron produced NaN or infinite activations: its statistics cannot be recorded."""


class CorpusError(NeurodbgError):
    """A corpus is missing, unreadable, empty, malformed, or lacks its text field."""


class ExplainerError(NeurodbgError):
    """An explainer backend failed: unreachable endpoint, timeout, or an answer that is not usable."""


class RunError(NeurodbgError):
    """A training run directory is missing, another program's, corrupt, or cannot be written; or a
    watch was set up wrongly (no parameters, unknown site, bad breakpoint)."""


class BreakpointHit(NeurodbgError):
    """A training breakpoint held: the run stopped at this step (`hit` says which, where and why)."""

    def __init__(self, message: str, hit: object = None) -> None:
        super().__init__(message)
        self.hit = hit


class ImageError(NeurodbgError, ValueError):
    """An image is missing, unreadable, too large, or of a shape the model cannot take."""


class ProbeDataError(NeurodbgError, ValueError):
    """A labelled prompt set that cannot be probed (missing, malformed, one class, mismatched rows)."""


class TunedLensError(NeurodbgError):
    """A tuned lens is missing, unreadable, malformed, or cannot be trained as asked."""


class TunedLensMismatchError(TunedLensError):
    """A tuned lens was trained for another model (its fingerprint or shape differs)."""


class UILanguageError(NeurodbgError, ValueError):
    """The web app was asked for a language it has no dictionary for (`serve --lang`, `/?lang=`)."""
