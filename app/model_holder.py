"""The served model: loaded once, swapped in place when the store's active version changes.

A request takes a reference to the current predictor and finishes on it even
if a swap happens meanwhile; swapping only rebinds `self.predictor`, so no
request ever sees a half-loaded model.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
from collections.abc import Callable
from pathlib import Path

from model.artifact import ArtifactError
from model.predictor import Predictor
from store.model_store import ModelStore, StoreError, StoreUnavailable

log = logging.getLogger("intently.model")


class ModelHolder:
    def __init__(
        self,
        model_dir: Path | None,
        store: ModelStore | None,
        reload_interval: float = 1.0,
        quantize: bool = False,
    ):
        if (model_dir is None) == (store is None):
            raise ValueError("serve either a model directory or a model store")
        self.model_dir = model_dir
        self.store = store
        self.reload_interval = reload_interval
        self.quantize = quantize
        self.predictor: Predictor | None = None
        self.error: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._failed: str | None = None
        self._checking = asyncio.Lock()
        self.on_swap: list[Callable[[str | None, str], None]] = []  # callbacks(old_version, new_version)

    def _load(self, path: Path) -> Predictor:
        return Predictor.load(path, quantize=self.quantize)

    def _load_version(self, version: str) -> Predictor:
        """Blocking: on PostgreSQL, `path` may fetch the version into the local cache first."""
        assert self.store is not None
        return self._load(self.store.path(version))

    def _load_current(self) -> Predictor:
        if self.model_dir is not None:
            return self._load(self.model_dir)
        assert self.store is not None
        pointer = self.store.pointer()
        active = pointer.version
        if not active:
            raise StoreError(f"model store {self.store.describe()} has no active version")
        try:
            return self._load_version(active)
        except StoreUnavailable:
            raise  # the database is down: nothing to judge the version by
        except (ArtifactError, StoreError, OSError) as exc:
            # A worker (re)started while the active version is damaged serves what its
            # siblings still serve, the previously active version, rather than nothing.
            for previous in pointer.history:
                try:
                    predictor = self._load_version(previous)
                except (ArtifactError, StoreError, OSError):
                    continue
                self._failed = active  # logged here, not again every interval
                log.error("active version %s could not be loaded, serving %s: %s", active, previous, exc)
                return predictor
            raise

    async def start(self) -> None:
        """Load before the worker takes traffic, then watch the store in the background.

        Awaited in the lifespan: with several workers on one socket, a worker
        still loading would otherwise answer 503 beside one that is ready.
        A model that cannot be loaded leaves /readyz false with the reason.
        """
        try:
            self._install(await asyncio.to_thread(self._load_current))
        except (ArtifactError, StoreError, OSError) as exc:
            self.error = str(exc)
            log.error("model not loaded: %s", exc)
        if self.store is not None:
            self._watcher = asyncio.create_task(self._watch(), name="intently-model-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def _install(self, predictor: Predictor) -> None:
        old = self.predictor.version if self.predictor else None
        self.predictor = predictor
        self.error = None
        for callback in self.on_swap:
            callback(old, predictor.version)
        if old is None:
            log.info("model %s loaded", predictor.version)
        else:
            log.info("model swapped: %s -> %s", old, predictor.version)
        _settle_heap()

    async def check_store(self) -> None:
        """Swap to the store's active version if it changed; a broken one is logged and skipped.

        One check at a time: the activate route and the watcher (woken by that same activation)
        would otherwise load the version twice, or install an older one after a newer.
        """
        async with self._checking:
            await self._check_store()

    async def _check_store(self) -> None:
        assert self.store is not None
        try:
            active = await asyncio.to_thread(self.store.active)
        except StoreError as exc:
            log.warning("cannot read the active version: %s", exc)
            return
        current = self.predictor.version if self.predictor else None
        if active is None or active == current or active == self._failed:
            return
        try:
            predictor = await asyncio.to_thread(self._load_version, active)
        except StoreUnavailable as exc:  # not the version's fault: tried again next time
            log.warning("active version %s could not be fetched, still serving %s: %s", active, current, exc)
            return
        except (ArtifactError, StoreError, OSError) as exc:
            self._failed = active  # logged once, not every interval
            log.error("active version %s could not be loaded, still serving %s: %s", active, current, exc)
            return
        self._install(predictor)

    async def _watch(self) -> None:
        assert self.store is not None
        while True:
            # Returns at once on a PostgreSQL notification; else after the interval (polling).
            await asyncio.to_thread(self.store.wait_for_change, self.reload_interval)
            try:
                await self.check_store()
            except Exception:  # the watcher must outlive any one bad check
                log.exception("model store check failed")


def _settle_heap() -> None:
    """Keep the long-lived heap (torch, the model, its vocabulary) out of every garbage collection.

    Under load each full collection walked that heap again, a stall for every
    request in flight; frozen, those objects are no longer scanned (docs/RESEARCH.md).
    Unfreezing and collecting first, at every swap, lets the model swapped out
    be reclaimed even if it holds reference cycles; that one collection is the
    price of a swap.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _return_free_memory()


def _return_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc), such as those of the load's copies.

    Loading reads every tensor, then copies it into the network; freed, that memory stays
    counted in the worker's resident size unless given back.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to do
        return
    libc.malloc_trim(0)
