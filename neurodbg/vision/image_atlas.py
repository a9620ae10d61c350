"""One neuron of an image atlas, as the neuron page shows it: its statistics, and its top
and bottom images, each with the position where the neuron peaks in it, that
position's receptive field (the crop of the image the neuron saw there), its feature
map over the image, the image's label and the model's class for it, and the
neuron's descriptions."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from neurodbg.analyze.neuron_page import histogram_span
from neurodbg.atlas import descriptions, records
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import AtlasError
from neurodbg.model import Model
from neurodbg.vision.receptive_field import PositionGrid


def require_image_atlas(store: AtlasStore) -> None:
    if not records.is_image_atlas(store):
        raise AtlasError(f"{store.directory} is a text atlas; this needs an image atlas (neurodbg scan --images)")


def open_image_atlas(directory: str | Path, model: Model | None = None) -> tuple[Model, AtlasStore]:
    """A finished image atlas and its model: `model`, checked against the atlas, or (None) the
    atlas's own. The caller closes the store."""
    from neurodbg.atlas.binding import model_for_atlas

    store = AtlasStore.open(directory)
    try:
        require_image_atlas(store)
        records.require_complete(store)
        return model_for_atlas(store, model), store
    except BaseException:
        store.close()
        raise


def grid_of(store: AtlasStore, site: str) -> PositionGrid:
    grids = store.get_json("grids") or {}
    if site not in grids:
        raise AtlasError(f"the atlas {store.directory} records no position grid for {site}")
    return PositionGrid.from_dict(grids[site])


def _name(names: list[str] | None, index: int) -> str | None:
    return names[index] if names and 0 <= index < len(names) else None


def data_url(data: bytes) -> str:
    kind = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def picture(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.copy()


def image_neuron_page(store: AtlasStore, layer: int, neuron: int, *, exemplars: int = 20,
                      pictures: bool = False) -> dict[str, Any]:
    """The neuron page of an image atlas. `pictures` adds each image as a data URL (for the web app)."""
    require_image_atlas(store)
    rec = records.neuron(store, layer, neuron)
    grid = grid_of(store, rec.site)
    labels, classes = store.get_json("label_names"), store.get_json("class_names")
    shown = {kind: items[:exemplars] for kind, items in rec.exemplars.items()}
    rows = records.images(store, [e.seq_index for items in shown.values() for e in items])
    out = rec.to_dict()
    for key in ("hist", "promoted", "suppressed", "exemplars"):
        out.pop(key)
    out["id"] = rec.id
    out["kind"] = "images"
    out["histogram"] = histogram_span(store, rec.hist)
    out["grid"] = {"rows": grid.rows, "cols": grid.cols, "skip": grid.skip, "height": grid.height,
                   "width": grid.width}
    out["exemplars"] = {}
    for kind, items in shown.items():
        entries = []
        for e in items:
            acts = np.asarray(e.acts, dtype=np.float64)
            position = int(np.argmin(acts) if kind == "-" else np.argmax(acts))
            row = rows.get(e.seq_index)
            cell = grid.cell(position)
            entry: dict[str, Any] = {
                "rank": e.rank, "image": e.seq_index, "value": round(e.value, 5),
                "name": row.name if row else None,
                "label": _name(labels, row.label) if row else None,
                "predicted": _name(classes, row.predicted) if row else None,
                "peak": {"position": position, "row": cell[0] if cell else None, "col": cell[1] if cell else None},
                "field": list(grid.field(position)),
                "map": [[round(float(v), 4) for v in line] for line in
                        acts[grid.skip:].reshape(grid.rows, grid.cols)] if grid.rows * grid.cols > 1 else None}
            if pictures and row is not None:
                entry["picture"] = data_url(row.data)
            entries.append(entry)
        out["exemplars"][kind] = entries
    found = descriptions.for_neuron(store, layer, neuron)
    out["descriptions"] = {p: next((e.to_dict() for e in found if e.polarity == p), None) for p in ("+", "-")}
    return out


def image_neuron_figure(store: AtlasStore, layer: int, neuron: int, path: str | Path, *, exemplars: int = 16
                        ) -> Path:
    """The neuron's top and bottom images as one PNG (feature maps over them, peaks' fields boxed)."""
    from neurodbg.viz.vision import image_neuron_figure as draw

    page = image_neuron_page(store, layer, neuron, exemplars=exemplars)
    rows = records.images(store, [e["image"] for items in page["exemplars"].values() for e in items])
    return draw(page, {i: picture(row.data) for i, row in rows.items()}, Path(path))
