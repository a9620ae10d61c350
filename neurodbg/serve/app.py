"""The HTTP API and the frontend, over one `Monitor`. Every endpoint validates its
input, takes the gate (see gate.py), calls the Monitor, and returns JSON; errors
neurodbg raises on purpose become 4xx with their one-line message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as Path_
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from neurodbg.analyze.monitor import Monitor
from neurodbg.analyze.prompt import Prompt
from neurodbg.analyze.tuned_lens import TunedLens
from neurodbg.atlas import records
from neurodbg.atlas.store import AtlasStore
from neurodbg.errors import NeurodbgError, NeuronIndexError, PromptError, RunError
from neurodbg.model import Model
from neurodbg.serve import schemas
from neurodbg.serve.gate import Gate
from neurodbg.serve.languages import AUTO, ui_language
from neurodbg.serve.limits import Limits
from neurodbg.serve.security import Guard
from neurodbg.serve.streams import Cancelled, Emit, Workers, ndjson
from neurodbg.serve.vision_routes import add_vision_routes
from neurodbg.trace.interventions import dumps, parse_interventions
from neurodbg.train.runs import list_runs, run_in, run_view

RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

log = logging.getLogger("neurodbg.serve")


def finite(value: Any) -> Any:
    """`value` with every non-finite float spelled as a string: JSON has no NaN or Infinity, and an
    error that echoes the request's own input must still be valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
STATIC = files("neurodbg.serve") / "static"


def create_app(monitor: Monitor, *, limits: Limits | None = None, token: str | None = None,
               loopback_only: bool = True, runs: Path | None = None, vision: Model | None = None,
               vision_atlas: AtlasStore | None = None, tuned_lens: TunedLens | None = None,
               lang: str = AUTO) -> FastAPI:
    """`token`: required from every client when given (always give one when not bound to loopback).
    `loopback_only`: answer only requests whose Host is loopback (when bound to 127.0.0.1).
    `runs`: a directory of training runs for the Training view (clients name runs, never paths).
    `vision`: a vision model for the Vision view (uploaded images, never paths); `vision_atlas`: an
    image atlas of it (`vision.image_atlas.open_image_atlas`) for channel pages and search.
    `tuned_lens`: a tuned lens of the model (checked now) for the lens view's tuned switch.
    `lang`: the page's language where the browser has no choice of its own ("en", "zh"), or "auto"
    (the browser's language)."""
    limits = limits or Limits()
    lang = ui_language(lang, auto=True)
    if tuned_lens is not None:
        tuned_lens.check(monitor.model)
    gate = Gate()
    workers = Workers()
    model = monitor.model
    app = FastAPI(title="neurodbg", version="1", docs_url="/api/docs", openapi_url="/api/openapi.json",
                  redoc_url=None, description="The Monitor over HTTP: chat, token views, the neurons behind a "
                                              "token, neuron pages, search, steering, logit lens, attention.")
    # an uploaded image travels as base64 in JSON: with a vision model the body limit makes room for it
    body_limit = limits.max_body_bytes if vision is None else max(limits.max_body_bytes,
                                                                  (limits.max_image_bytes * 4) // 3 + 4096)
    app.add_middleware(Guard, token=token, loopback_only=loopback_only, max_body_bytes=body_limit)

    @app.exception_handler(NeurodbgError)
    async def _bad_input(request: Request, exc: NeurodbgError) -> JSONResponse:
        missing = isinstance(exc, NeuronIndexError) or (isinstance(exc, RunError) and str(exc).startswith("no run"))
        return JSONResponse({"detail": str(exc)}, status_code=404 if missing else 400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        # a NaN or infinite number fails every branch of a union; name that cause, not a branch's shape
        chosen = next((e for e in errors if e.get("type") == "finite_number"), errors[0] if errors else None)
        first: dict[str, Any] = dict(chosen) if chosen else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        detail = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        if first.get("type") == "json_invalid":
            detail = f"malformed JSON: {first.get('ctx', {}).get('error', 'cannot parse the body')}"
        echoed = finite(jsonable_encoder(errors, custom_encoder={Exception: str}))
        return JSONResponse({"detail": detail, "errors": echoed}, status_code=422)

    # -- helpers ------------------------------------------------------------------------------
    def prompt_of(given: schemas.PromptInput) -> Prompt:
        if given.text is not None:
            prompt = monitor.prompt(given.text, chat=given.chat)
        elif given.messages is not None:
            prompt = monitor.conversation([m.model_dump() for m in given.messages])
        else:
            assert given.ids is not None
            prompt = monitor.from_ids(given.ids, given.template)
        if prompt.length > limits.max_prompt_tokens:
            raise PromptError(f"the prompt has {prompt.length} tokens; this server accepts at most "
                              f"{limits.max_prompt_tokens}")
        return prompt

    def target_of(text: str | None, ident: int | None) -> str | int | None:
        if text is not None and ident is not None:
            raise NeurodbgError("give target or target_id, not both")
        return ident if ident is not None else text

    def at_most(what: str, value: int, limit: int) -> None:
        if value > limit:
            raise NeurodbgError(f"{what} {value} is over this server's limit of {limit}")

    def info() -> dict[str, Any]:
        view = monitor.view
        atlas: dict[str, Any] | None = None
        if view is not None:
            meta = records.info(view.store)
            atlas = {k: meta.get(k) for k in ("model_name", "corpus_name", "tokens", "neurons", "layers", "status")}
            atlas["layer_ids"] = view.layers
            atlas["width"] = view.width
            atlas["descriptions"] = len(view.descriptions())
        layers = model.n_layers                     # (not the mlp.act sites: a mixture of experts has none)
        return {"model": model.name, "layers": layers, "moe": any(".router." in s for s in model.sites),
                "chat_template": bool(getattr(model.tokenizer, "chat_template", None)), "atlas": atlas,
                "limits": limits.to_dict(), "token_required": token is not None, "runs": runs is not None,
                "vision": vision.name if vision is not None else None, "tuned_lens": tuned_lens is not None,
                "lang": lang}

    summary = info()
    if monitor.view is not None and summary["atlas"]["descriptions"]:
        # load the search index and its query embedder now, not on a user's first search (and not
        # in a thread that could still be loading when the server stops)
        with contextlib.suppress(NeurodbgError):
            monitor.view.search().search("warm-up", 1)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(workers.join)    # stream jobs: cancelled, then joined

    app.router.lifespan_context = lifespan

    # -- endpoints ----------------------------------------------------------------------------
    @app.get("/api/info")
    def get_info() -> dict[str, Any]:
        """The model, the atlas, and this server's limits."""
        return {**summary, "waiting": gate.waiting}

    @app.post("/api/tokens")
    def post_tokens(body: schemas.TokensRequest) -> dict[str, Any]:
        """Every position's top-k next tokens and the probability of the token that follows."""
        with gate.model():
            prompt = prompt_of(body.input)
            positions = monitor.tokens(prompt, k=body.k)
        return {"ids": prompt.ids[0].tolist(), "template": prompt.template,
                "positions": [p.to_dict() for p in positions]}

    @app.post("/api/chat", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}},
                               "description": "events: prompt, token (one per generated token), done, error"}})
    def post_chat(body: schemas.ChatRequest) -> StreamingResponse:
        """The assistant's next turn, streamed token by token (newline-delimited JSON)."""
        at_most("max_new_tokens", body.max_new_tokens, limits.max_new_tokens)
        sampling = body.sampling.settings() if body.sampling is not None else None
        with gate.model():     # tokenise now, so a bad conversation is a 4xx rather than a stream error
            prompt = prompt_of(body.input)
        room = limits.max_prompt_tokens - prompt.length
        if room < 1:
            raise PromptError(f"the conversation has {prompt.length} tokens; no room left to reply within "
                              f"{limits.max_prompt_tokens}")

        def job(emit: Emit, cancelled: Any) -> None:
            with gate.model():
                emit({"type": "prompt", "ids": prompt.ids[0].tolist(), "tokens": prompt.tokens,
                      "template": prompt.template})
                ids = prompt.ids[0].tolist()
                for step in monitor.stream(prompt, max_new_tokens=min(body.max_new_tokens, room), k=body.k,
                                           sampling=sampling, cancelled=cancelled):
                    ids.append(step.id)
                    emit({"type": "token", **step.to_dict()})
                if cancelled():
                    raise Cancelled
                template = prompt.template + [False] * (len(ids) - prompt.length)
                full = monitor.from_ids(ids, template)
                positions = monitor.tokens(full, k=body.k)
            reply = model.tokenizer.decode(ids[prompt.length:], skip_special_tokens=True)
            emit({"type": "done", "ids": ids, "template": template, "start": prompt.length, "reply": reply,
                  "positions": [p.to_dict() for p in positions]})

        return StreamingResponse(ndjson(job, workers), media_type="application/x-ndjson")

    @app.post("/api/analyze")
    def post_analyze(body: schemas.AnalyzeRequest) -> dict[str, Any]:
        """The neurons behind a next token (attribution or activation), grouped into labelled clusters."""
        with gate.both():
            prompt = prompt_of(body.input)
            analysis = monitor.analyze(prompt, target=target_of(body.target, body.target_id),
                                       position=body.position, mode=body.mode, top=body.top, rank=body.rank,
                                       include_template=body.include_template, threshold=body.threshold,
                                       min_cluster=body.min_cluster, min_coherence=body.min_coherence)
        return analysis.to_dict()

    @app.get("/api/neuron")
    def get_neuron(id: str = Query(max_length=40, description="like L5/N123 (a trailing + or - is ignored)"),
                   candidates: bool = False) -> dict[str, Any]:
        """One neuron: statistics, histogram, output tokens, exemplars of both polarities, descriptions."""
        try:
            layer, neuron, _ = records.parse_neuron_id(id)
        except NeuronIndexError as exc:     # a malformed id is a bad request, not a missing neuron
            raise NeurodbgError(str(exc)) from None
        with gate.atlas():
            return monitor.neuron(layer, neuron, candidates=candidates)

    @app.get("/api/search")
    def get_search(q: str = Query(min_length=1, max_length=500),
                   k: int = Query(20, ge=1, le=schemas.CAPS.max_results),
                   polarity: str | None = Query(None, pattern=r"^[+-]$"),
                   layer_min: int | None = Query(None, ge=0, le=1000),
                   layer_max: int | None = Query(None, ge=0, le=1000),
                   min_score: float | None = Query(None, ge=-1, le=1, allow_inf_nan=False)) -> dict[str, Any]:
        """Neurons whose descriptions mean what the query says."""
        at_most("k", k, limits.max_results)
        layers = None
        if layer_min is not None or layer_max is not None:
            layers = range(layer_min or 0, (layer_max if layer_max is not None else 1000) + 1)
        with gate.atlas():
            hits = monitor.search(q, k, layers=layers, polarity=polarity, min_score=min_score)
        return {"query": q, "hits": [h.to_dict() for h in hits]}

    @app.post("/api/steer/preview")
    def post_steer_preview(body: schemas.SteerPreviewRequest) -> dict[str, Any]:
        """The neurons a steering spec selects and the values it would set; the resolved spec as JSON."""
        at_most("k", sum(one.k for one in schemas.spec_list(body.spec)), limits.max_neurons)
        with gate.atlas():
            neurons = monitor.preview(body.spec)
            interventions = monitor.steering(body.spec)
        return {"neurons": neurons, "saved": dumps(interventions)}

    @app.post("/api/steer", response_class=StreamingResponse,
              responses={200: {"content": {"application/x-ndjson": {}},
                               "description": "events: progress (per generated token), result, error"}})
    def post_steer(body: schemas.SteerRequest) -> StreamingResponse:
        """Generate without and with the steering; before, after and the target's probability change."""
        at_most("max_new_tokens", body.max_new_tokens, limits.max_new_tokens)
        if body.spec is not None:
            at_most("k", sum(one.k for one in schemas.spec_list(body.spec)), limits.max_neurons)
        target = target_of(body.target, body.target_id)
        with gate.both():
            prompt = prompt_of(body.input)
            interventions = (monitor.steering(body.spec) if body.spec is not None
                             else parse_interventions(body.interventions))
            monitor.check(prompt, interventions)      # refused now with a 4xx, not inside the stream

        def job(emit: Emit, cancelled: Any) -> None:
            def progress(stage: str, done: int) -> None:
                if cancelled():
                    raise Cancelled
                emit({"type": "progress", "stage": stage, "done": done, "total": body.max_new_tokens})

            with gate.model():
                result = monitor.steer(prompt, interventions, target=target, max_new_tokens=body.max_new_tokens,
                                       progress=progress)
            emit({"type": "result", **result.to_dict(), "saved": dumps(interventions)})

        return StreamingResponse(ndjson(job, workers), media_type="application/x-ndjson")

    @app.post("/api/moe/route")
    def post_moe_route(body: schemas.RouteRequest) -> dict[str, Any]:
        """A mixture of experts: which experts handled each token at each MoE layer, with their weights."""
        from neurodbg.analyze.moe_report import token_routes

        with gate.model():
            return token_routes(model, prompt_of(body.input).ids)

    @app.post("/api/lens")
    def post_lens(body: schemas.LensRequest) -> dict[str, Any]:
        """The logit lens (or, with `tuned`, the tuned lens): every layer's top tokens at one position,
        and the top token of every cell."""
        if body.tuned and tuned_lens is None:
            raise NeurodbgError("this server has no tuned lens (train one with `neurodbg train-lens`, then "
                                "start the server again)")
        with gate.model():
            prompt = prompt_of(body.input)
            target = target_of(body.target, body.target_id)
            report = monitor.lens_view(prompt, position=body.position, target=target, k=body.k,
                                       tuned=tuned_lens if body.tuned else None)
        return report.to_dict()

    @app.post("/api/consistency")
    def post_consistency(body: schemas.ConsistencyRequest) -> dict[str, Any]:
        """Self-consistency: sample the answer several times, vote, and show where the samples fork."""
        from neurodbg.analyze.consistency import consistency, extractor

        at_most("samples", body.samples, limits.max_samples)
        at_most("max_new_tokens", body.max_new_tokens, limits.max_new_tokens)
        at_most("fork_neurons", body.fork_neurons, limits.max_neurons)
        extractor(body.extract)                   # an unknown mode is a 400 before any sampling
        with gate.model():
            prompt = prompt_of(body.input)
            result = consistency(model, prompt, samples=body.samples, extract=body.extract,
                                 sampling=body.sampling.settings(), max_new_tokens=body.max_new_tokens,
                                 triage=body.triage, fork_neurons=body.fork_neurons)
        return result.to_dict()

    @app.post("/api/embeddings")
    def post_embeddings(body: schemas.EmbeddingsRequest) -> dict[str, Any]:
        """An embedding map of words (token embeddings, or the residual stream where they stand)."""
        from neurodbg.analyze.embedding_map import embedding_map

        at_most("items", len(body.items), limits.max_map_items)
        with gate.model():
            result = embedding_map(model, body.items, kind=body.kind, layer=body.layer, method=body.method,
                                   neighbours=body.neighbours)
        return result.to_dict()

    @app.post("/api/attention")
    def post_attention(body: schemas.AttentionRequest) -> dict[str, Any]:
        """One layer's attention weights, [heads][query][key]."""
        with gate.model():
            prompt = prompt_of(body.input)
            if prompt.length > limits.max_attention_tokens:
                raise PromptError(f"attention maps are limited to {limits.max_attention_tokens} tokens "
                                  f"(this prompt has {prompt.length})")
            weights = monitor.attention(prompt, body.layer)
        return {"layer": body.layer, "tokens": prompt.tokens, "heads": int(weights.shape[0]),
                "weights": np.round(weights.astype(np.float64), 4).tolist()}

    @app.get("/api/runs")
    def get_runs() -> dict[str, Any]:
        """The training runs in the directory the server was started with (`serve --runs DIR`)."""
        if runs is None:
            raise NeurodbgError("this server has no training runs (start it with --runs DIR)")
        return {"runs": list_runs(runs)}

    @app.get("/api/runs/{name}")
    def get_run(name: str = Path_(max_length=128, pattern=RUN_NAME),
                points: int = Query(400, ge=10, le=2000)) -> dict[str, Any]:
        """One run: where it stands, its findings, and its curves (read anew on every request, so a
        run in progress is followed by asking again)."""
        if runs is None:
            raise NeurodbgError("this server has no training runs (start it with --runs DIR)")
        return finite(run_view(run_in(runs, name), most=points))

    if vision is not None:
        add_vision_routes(app, vision, limits, vision_atlas)

    # -- the frontend -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index(lang: str | None = None) -> FileResponse:
        if lang is not None:
            ui_language(lang)             # an unknown ?lang= is a 400 with one line, not a page in English
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app
