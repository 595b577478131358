"""The engine shard deployment: one Ray Serve replica per (timeframe, shard) around the
core's :class:`regimes.live.shard.EngineShard`.

Only scheduling lives here: the request methods run the shard inline on the replica's
event loop (one at a time, in arrival order); background tasks work the shadow queue
once the shard has been free of champion requests for ``shadow_idle_s`` (stepped at
once, a shadow's batch held up the reply Serve had still to send), land pending bars
and answers every ``flush_interval_s`` (for the writer deployment,
:mod:`regimes.serve.writer`) and checkpoint every ``checkpoint_interval_s``
(landings run in a thread, never on the request path); ``__del__`` (graceful
shutdown) lands and checkpoints what is left.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from ray import serve

from regimes.app.workspace import Workspace
from regimes.config.serving import ServeConfig
from regimes.live.shard import EngineShard, ShardOptions, shard_folder
from regimes.model.loaded import LoadedModel
from regimes.storage.recording import LiveSink

log = logging.getLogger(__name__)

# The replica's GIL hand-over interval (CPython's default is 5 ms): while a shadow batch or
# a landing thread holds the GIL, the threads that send a reply or take the next request
# wait at most this long for it.
SWITCH_INTERVAL_S = 0.0005
# Queued shadow batches above which shadows are stepped even while champion requests
# keep the shard busy (bounds the queue's memory; shadows never fall further behind).
SHADOW_MAX_LAG = 4


@serve.deployment(max_ongoing_requests=64, graceful_shutdown_timeout_s=30)
class EngineShardDeployment:
    """Serve replica of one engine shard (see the module docstring)."""

    async def __init__(
        self, timeframe: str, index: int, shards: int, params: dict, config: dict, writer
    ):
        self.config = ServeConfig.model_validate(config)
        self.writer = writer
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._last_step = 0.0
        self.workspace = Workspace.open(**params)
        registry = self.workspace.registry

        def open_model(model_id: str) -> LoadedModel:
            return LoadedModel.load(self.workspace.model_path(timeframe, model_id))

        sink = LiveSink(self.workspace.engine, self.workspace.state_store, registry, timeframe)
        folder = shard_folder(self.workspace.settings.serve_dir, timeframe, index)
        self.shard = EngineShard(
            timeframe,
            index,
            shards,
            folder,
            open_model,
            sink,
            ShardOptions(compare_rows=self.config.compare_rows),
        )
        self.shard.restore()
        self._write_lock = asyncio.Lock()
        self._shadow_work = asyncio.Event()
        await self.set_models(registry.champion(timeframe), registry.shadows(timeframe))
        self._tasks = [
            asyncio.create_task(self._shadow_loop()),
            asyncio.create_task(self._write_loop()),
        ]
        log.info(
            "%s shard %d/%d ready (champion %s, shadows %s, %d bars replayed)",
            timeframe,
            index,
            shards,
            self.shard.champion,
            self.shard.shadows,
            self.shard.restored_bars,
        )

    # -- requests

    async def step(self, bars):
        answers, rejected = self.shard.step(bars)
        self._last_step = time.monotonic()
        if self.shard.queued:
            self._shadow_work.set()
        return answers, rejected

    async def set_models(self, champion: str | None, shadows: list[str]) -> dict:
        if self.shard.set_models(champion, shadows):
            await self._checkpoint()
        return {"champion": self.shard.champion, "shadows": self.shard.shadows}

    async def latest(self, symbols: list[str] | None = None):
        return self.shard.latest(symbols)

    async def comparison(self) -> dict:
        self.shard.drain_shadows()
        return self.shard.comparison_frames()

    async def counters(self) -> dict:
        return self.shard.counters()

    async def pid(self) -> int:
        """This replica's process id (operators and the fault tests)."""
        return os.getpid()

    async def ready(self) -> bool:
        return self.shard.ready()

    async def flush(self) -> int:
        """Land everything pending now and have the writer write everything landed
        (operators and tests); returns the rows this shard landed."""
        self.shard.drain_shadows()
        async with self._write_lock:
            rows = await self._write(self.shard.take_pending())
        await self.writer.flush.remote()
        return rows

    async def checkpoint(self) -> None:
        await self._checkpoint()

    # -- background work

    async def _shadow_loop(self) -> None:
        """Step the shadows through the queued batches, one batch at a time, only once
        the shard has had no champion request for ``shadow_idle_s`` (the reply is sent
        and the next request is not here yet), unless more than ``SHADOW_MAX_LAG``
        batches wait."""
        idle = self.config.shadow_idle_s
        while True:
            await self._shadow_work.wait()
            self._shadow_work.clear()
            while self.shard.queued:
                wait = self._last_step + idle - time.monotonic()
                if wait > 0 and self.shard.queued <= SHADOW_MAX_LAG:
                    await asyncio.sleep(wait)
                    continue
                self.shard.step_shadows(batches=1)
                await asyncio.sleep(0)  # a waiting champion request goes first

    async def _write_loop(self) -> None:
        last_checkpoint = time.monotonic()
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            try:
                if time.monotonic() - last_checkpoint >= self.config.checkpoint_interval_s:
                    await self._checkpoint()
                    last_checkpoint = time.monotonic()
                else:
                    async with self._write_lock:
                        await self._write(self.shard.take_pending())
            except Exception:  # logged and retried at the next tick; the shard keeps serving
                log.exception("%s shard %d: background write failed", *self._name())

    async def _write(self, pending) -> int:
        if not pending:
            self.shard.settle(pending, ok=True)
            return 0
        try:
            rows = await asyncio.to_thread(self.shard.write_pending, pending)
        except Exception:
            self.shard.settle(pending, ok=False)
            raise
        self.shard.settle(pending, ok=True)
        return rows

    async def _checkpoint(self) -> None:
        async with self._write_lock:
            checkpoint = self.shard.prepare_checkpoint()
            try:
                await asyncio.to_thread(self.shard.commit, checkpoint)
            except Exception:
                self.shard.settle(checkpoint.pending, ok=False)
                raise
            self.shard.settle(checkpoint.pending, ok=True)

    def _name(self) -> tuple[str, int]:
        return self.shard.timeframe, self.shard.index

    async def __del__(self):
        """Graceful shutdown: write and checkpoint what is left."""
        for task in getattr(self, "_tasks", []):
            task.cancel()
        if hasattr(self, "shard"):
            try:
                await self._checkpoint()
            except Exception:
                log.exception("%s shard %d: final checkpoint failed", *self._name())
            self.shard.journal.close()
        if hasattr(self, "workspace"):
            self.workspace.close()
