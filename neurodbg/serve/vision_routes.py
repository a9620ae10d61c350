"""The web app's Vision view over HTTP: a vision model beside the language model
(`neurodbg serve --vision digits`). Clients upload an image's bytes (base64, size-
limited, decoded by Pillow under the image limits) — never a path — and get a
site's channels with their feature maps; a channel's maximisation picture is
computed once per (site, channel, steps) and kept. With an image atlas of the same
model (`--vision-atlas DIR`), a channel's page shows its top images from the atlas,
and the channels can be searched by their descriptions."""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any

from fastapi import FastAPI, Query

from neurodbg.atlas import records
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import ImageError, NeurodbgError, NeuronIndexError
from neurodbg.model import Model
from neurodbg.serve import schemas
from neurodbg.serve.limits import Limits


def add_vision_routes(app: FastAPI, vision: Model, limits: Limits, atlas: AtlasStore | None = None) -> None:
    """`atlas`: an image atlas of `vision` (checked by the caller: `vision.image_atlas.open_image_atlas`)."""
    lock = threading.Lock()              # one forward at a time on the vision model
    atlas_lock = threading.Lock()        # one reader at a time on the atlas and its search index
    pictures: dict[tuple[str, int, int], dict[str, Any]] = {}
    searcher: list[Any] = []             # the atlas's search index, loaded on the first search
    layer_of = {} if atlas is None else {site: layer for layer, site in records.layer_sites(atlas).items()}

    def atlas_layer(site: str) -> int:
        if atlas is None:
            raise NeurodbgError("this server has no image atlas (start it with --vision-atlas DIR)")
        name = vision.site(site).name
        if name not in layer_of:
            raise NeuronIndexError(f"the image atlas has no site {name} (it has {', '.join(layer_of)})")
        return layer_of[name]

    def decode(data: str) -> Any:
        from neurodbg.vision.images import open_image

        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ImageError("image: not base64") from None
        if len(raw) > limits.max_image_bytes:
            raise ImageError(f"the image is {len(raw):,} bytes; this server accepts at most {limits.max_image_bytes:,}")
        return open_image(raw, name="the uploaded image")

    @app.get("/api/vision")
    def vision_info() -> dict[str, Any]:
        """The vision model: its sites and classes."""
        return {"model": vision.name, "source": vision.source, "family": vision.family, "sites": vision.sites,
                "classes": len(vision.labels or []), "max_image_bytes": limits.max_image_bytes,
                "max_maximize_steps": limits.max_maximize_steps,
                "atlas": None if atlas is None else {"sites": list(layer_of), "images": atlas.get_json("images"),
                                                     "corpus": atlas.get("corpus_name")}}

    @app.get("/api/vision/neuron")
    def vision_neuron(site: str = Query(..., min_length=1, max_length=200), channel: int = Query(..., ge=0),
                      exemplars: int = Query(16, ge=1, le=50)) -> dict[str, Any]:
        """A channel's page from the image atlas: statistics, descriptions, top and bottom images
        (as data URLs) with the peak and its receptive field."""
        from neurodbg.vision.image_atlas import image_neuron_page

        layer = atlas_layer(site)
        with atlas_lock:
            assert atlas is not None
            return image_neuron_page(atlas, layer, channel, exemplars=exemplars, pictures=True)

    @app.get("/api/vision/search")
    def vision_search(q: str = Query(..., min_length=1, max_length=200), k: int = Query(20, ge=1, le=100)
                      ) -> dict[str, Any]:
        """Channels whose descriptions mean what the query says."""
        from neurodbg.search.atlas_search import AtlasSearch

        if atlas is None:
            raise NeurodbgError("this server has no image atlas (start it with --vision-atlas DIR)")
        sites = {layer: site for site, layer in layer_of.items()}
        with atlas_lock:
            if not searcher:
                searcher.append(AtlasSearch(atlas))
            hits = searcher[0].search(q, k)
        return {"query": q, "hits": [{**h.to_dict(), "site": sites.get(h.layer), "channel": h.neuron} for h in hits]}

    @app.post("/api/vision/trace")
    def vision_trace(body: schemas.VisionTraceRequest) -> dict[str, Any]:
        """One uploaded image at one site: channels by their largest activation, their feature maps,
        and the classes."""
        from neurodbg.vision.image_trace import image_view

        picture = decode(body.image)
        with lock:
            return image_view(vision, picture, body.site, top=body.top)

    @app.post("/api/vision/maximize")
    def vision_maximize(body: schemas.VisionMaximizeRequest) -> dict[str, Any]:
        """A channel's maximisation picture (as RGB bytes) and the objective it reaches."""
        from neurodbg.vision.maximize import maximize

        if body.steps > limits.max_maximize_steps:
            raise NeurodbgError(f"steps {body.steps} is over this server's limit of {limits.max_maximize_steps}")
        key = (vision.site(body.site).name, body.channel, body.steps)
        with lock:
            if key not in pictures:
                result = maximize(vision, key[0], body.channel, steps=body.steps)
                pictures[key] = {**result.to_dict(), "pixels": result.pixels()}
        return pictures[key]

