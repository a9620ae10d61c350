"""The web app's Vision view over HTTP: a vision model beside the language model
(`neurodbg serve --vision digits`). Clients upload an image's bytes (base64, size-
limited, decoded by Pillow under the image limits) — never a path — and get a
site's channels with their feature maps; a channel's maximisation picture is
computed once per (site, channel, steps) and kept."""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any

from fastapi import FastAPI

from neurodbg.errors import ImageError, NeurodbgError
from neurodbg.model import Model
from neurodbg.serve import schemas
from neurodbg.serve.limits import Limits


def add_vision_routes(app: FastAPI, vision: Model, limits: Limits) -> None:
    lock = threading.Lock()              # one forward at a time on the vision model
    pictures: dict[tuple[str, int, int], dict[str, Any]] = {}

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
                "max_maximize_steps": limits.max_maximize_steps}

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
