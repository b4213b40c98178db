"""Builds the FastAPI application: settings, model, middleware, routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import errors, logs, metrics
from app.batcher import Batcher
from app.config import Settings, get_settings, settings_store
from app.fast_path import ClassifyFastPath
from app.middleware import RequestContext
from app.model_holder import ModelHolder
from app.review import ReviewCapture
from app.routes import (
    classify,
    evaluation,
    health,
    model_info,
    playground,
    rasa,
    review,
    training_jobs,
    versions,
)
from store.model_store import ModelStore
from store.review import open_review_store
from training.available import can_train
from training.dispatcher import JobDispatcher


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings.log_level, settings.log_format)
    store = None if settings.model_dir else settings_store(settings)
    holder = ModelHolder(settings.model_dir, store, settings.reload_interval, settings.quantize)
    holder.on_swap.append(metrics.model_swapped)
    batcher = Batcher(settings.batch_max_size, settings.batch_max_wait_ms)
    batcher.on_batch.append(metrics.BATCH_SIZE.observe)
    # Where the `train` extra is installed, every worker is also a trainer; elsewhere (the slim
    # image, `pip install intently`) jobs are queued here and left to `intently worker`.
    dispatcher = JobDispatcher(store) if store is not None and can_train() else None
    capture = _review_capture(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None and store.active() is None:
            # `intently serve` fills an empty store before starting; this covers
            # a bare `uvicorn app.main:create_app --factory`. Imported here: it may train, with
            # torch, which a worker serving a stored model never loads.
            if can_train():
                from training import threads

                # One thread by default: this worker's cores serve requests too.
                threads.configure(settings.torch_threads or 1)
            from training.default_model import ensure_default

            await asyncio.to_thread(ensure_default, store)
        batcher.start()
        await holder.start()
        if dispatcher is not None:
            dispatcher.start()
        if capture is not None:
            capture.start()
        yield
        if dispatcher is not None:
            await dispatcher.stop()
        await holder.stop()
        await batcher.stop()
        if capture is not None:
            await asyncio.to_thread(capture.stop)
        if store is not None:
            store.close()

    app = FastAPI(
        title="Intently",
        version="0.1.0",
        summary="Intent classification for chatbots: a fast recurrent model behind a REST API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.batcher = batcher
    app.state.dispatcher = dispatcher
    app.state.review = capture
    errors.install(app)
    # Added first, so innermost: inside CORS and RequestContext, which apply to it as to any route.
    app.add_middleware(ClassifyFastPath, fastapi_app=app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )
    app.add_middleware(
        RequestContext,
        max_body_bytes=settings.max_body_bytes,
        larger_bodies={"/v1/training-jobs": settings.max_upload_bytes},
    )
    routers = (classify, rasa, model_info, evaluation, health, versions, training_jobs, review, playground)
    for module in routers:
        app.include_router(module.router)
    _document_bodies_read_by_hand(app)
    return app


def _review_capture(settings: Settings, store: ModelStore | None) -> ReviewCapture | None:
    """The review inbox's capture, with INTENTLY_REVIEW on: in the model store's backend (a server of a
    fixed model directory keeps it in the store the settings name, as a retraining server would)."""
    if not settings.review:
        return None
    return ReviewCapture(
        open_review_store(store if store is not None else settings_store(settings)),
        sample_rate=settings.review_sample_rate,
        max_queue=settings.review_queue_size,
        max_items=settings.review_max_items,
        max_age_seconds=settings.review_max_age_days * 86400,
    )


def _document_bodies_read_by_hand(app: FastAPI) -> None:
    """Routes that read JSON or a form themselves declare no body model: add their schemas."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI after the first call; the update below is idempotent
        schema.setdefault("components", {}).setdefault("schemas", {}).update(training_jobs.body_schemas())
        return schema

    # Replacing app.openapi is FastAPI's documented way to extend the schema; mypy sees a method.
    app.openapi = openapi  # type: ignore[method-assign]
