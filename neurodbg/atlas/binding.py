"""The model an atlas belongs to: load it (or check a given one) by the atlas's
recorded source and refuse a model whose weights differ from the scanned one."""

from __future__ import annotations

from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import AtlasMismatchError
from neurodbg.model import Model


def check_model(store: AtlasStore, model: Model) -> None:
    expected = store.get("model_fingerprint")
    if expected is not None and model.fingerprint() != expected:
        raise AtlasMismatchError(
            f"the atlas {store.directory} was made with a different model: {store.get('model_name')} "
            f"({expected[:12]}), not {model.name} ({model.fingerprint()[:12]}); use that model or another atlas")


def model_for_atlas(store: AtlasStore, model: str | Model | None = None, *, device: str | None = None,
                    progress: bool = True) -> Model:
    """`model` (a Model, or anything `load_model` takes) or, by default, the atlas's own."""
    from neurodbg.models.loader import load_model

    if not isinstance(model, Model):
        source = model or store.get("model_source") or store.get("model_name")
        if source is None:
            raise AtlasMismatchError(f"the atlas {store.directory} does not record its model; pass one")
        model = load_model(source, device=device, progress=progress)
    check_model(store, model)
    return model
