"""The model an atlas belongs to: load it (or check a given one) by the atlas's
recorded source and refuse a model whose weights differ from the scanned one;
its tokenizer alone, where it is on this machine, for reading token ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

    if not isinstance(model, Model) and store.get("kind") == "images":
        from neurodbg.vision.zoo import open_vision_model

        recorded = store.get_json("vision_model") or {}
        model = open_vision_model(model or recorded.get("name") or "digits", weights=recorded.get("weights"),
                                  progress=progress)
    if not isinstance(model, Model):
        source = model or store.get("model_source") or store.get("model_name")
        if source is None:
            raise AtlasMismatchError(f"the atlas {store.directory} does not record its model; pass one")
        model = load_model(source, device=device, progress=progress)
    check_model(store, model)
    return model


def atlas_tokenizer(store: AtlasStore) -> Any | None:
    """The tokenizer of the atlas's model when it is on this machine (a provisioned catalogue model
    or a local model directory), without loading the weights; None otherwise."""
    from neurodbg.models import catalogue, provision

    name = store.get("model_name") or ""
    entry = catalogue.lookup(name)
    directory: Path | None = None
    if entry is not None and provision.is_ready(provision.cached_dir(entry)):
        directory = provision.cached_dir(entry)
    elif (source := store.get("model_source")) and Path(source).expanduser().is_dir():
        directory = Path(source).expanduser()
    if directory is None:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError):
        return None


def atlas_vocabulary(store: AtlasStore) -> list[str] | None:
    """Each token id's text for the atlas's model (see `atlas_tokenizer`)."""
    tokenizer = atlas_tokenizer(store)
    if tokenizer is None:
        return None
    return list(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))
