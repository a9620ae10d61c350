"""`neurodbg serve`: the web app over the Monitor."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from neurodbg.cli.common import ModelOpt, load
from neurodbg.errors import NeurodbgError


def serve(
    atlas: Annotated[Path | None, typer.Option(help="Atlas directory (neuron pages, search, steering, "
                                                    "activation mode). Without it: chat, attribution, lens, "
                                                    "attention.")] = None,
    model: ModelOpt = "default",
    host: Annotated[str, typer.Option(help="Interface to bind. Anything but loopback requires a token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    token: Annotated[str | None, typer.Option(help="Access token (default: $NEURODBG_TOKEN, or a random one "
                                                   "when not bound to loopback).")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=256, help="Longest generation a client may ask.")]
    = 256,
    max_prompt_tokens: Annotated[int, typer.Option(min=8, help="Longest prompt a client may send.")] = 1024,
    runs: Annotated[Path | None, typer.Option(help="A directory of training runs (neurodbg.watch) for the "
                                                   "Training view; followed live.")] = None,
    vision: Annotated[str | None, typer.Option(help="A vision model for the Vision view: digits, a torchvision "
                                                    "name or a model directory.")] = None,
    vision_weights: Annotated[Path | None, typer.Option(help="Weights file for a torchvision --vision model.")]
    = None,
    vision_atlas: Annotated[Path | None, typer.Option(help="An image atlas (neurodbg scan --images) for the Vision "
                                                           "view's channel pages and search; its model is the "
                                                           "default --vision model.")] = None,
    tuned_lens: Annotated[Path | None, typer.Option(help="A tuned lens file for the lens view's tuned switch "
                                                         "(default: the model's, when `train-lens` made one).")]
    = None,
    lang: Annotated[str, typer.Option(help="The web app's language where a browser has not chosen one: auto (the "
                                           "browser's language), en or zh. CLI messages stay English.")] = "auto",
) -> None:
    """Serve the Monitor in the browser: chat, token views, neurons, steering, lens, attention."""
    import uvicorn

    from neurodbg.analyze.monitor import Monitor
    from neurodbg.serve import Limits, create_app
    from neurodbg.serve.languages import ui_language
    from neurodbg.serve.security import is_loopback

    lang = ui_language(lang, auto=True)       # before anything loads: one clear line
    token = token or os.environ.get("NEURODBG_TOKEN") or None
    loopback = is_loopback(host)
    if not loopback and token is None:
        token = secrets.token_urlsafe(24)
    if atlas is not None and not atlas.is_dir():
        raise NeurodbgError(f"no atlas at {atlas}: the directory does not exist")
    if runs is not None and not runs.is_dir():
        raise NeurodbgError(f"no runs at {runs}: the directory does not exist")
    listener = _listen(host, port)        # before loading anything: a busy port is one clear line
    monitor = Monitor(load(model, quiet=False), atlas)
    vision_model = image_atlas = None
    if vision is not None:
        from neurodbg.vision.zoo import open_vision_model

        vision_model = open_vision_model(vision, weights=vision_weights)
    if vision_atlas is not None:
        from neurodbg.vision.image_atlas import open_image_atlas

        vision_model, image_atlas = open_image_atlas(vision_atlas, vision_model)
    from neurodbg.analyze.tuned_lens import find_tuned_lens

    lens = find_tuned_lens(monitor.model, tuned_lens) if monitor.model.adapter is not None else None
    app = create_app(monitor, limits=Limits(max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens),
                     token=token, loopback_only=loopback, runs=runs, vision=vision_model, vision_atlas=image_atlas,
                     tuned_lens=lens, lang=lang)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{listener.getsockname()[1]}/" + (f"?token={token}" if token else "")
    sys.stderr.write(f"neurodbg: serving {monitor.model.name} on {url}\n")   # one unwrapped line: the link
    sys.stderr.flush()
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise NeurodbgError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
