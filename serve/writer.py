"""The writer deployment: one replica that takes what the engine shards landed
(:mod:`regimes.live.landing`) to the database, ``current_states`` and the Delta state
store, in a process of its own, so the writes never hold the GIL of a shard that is
answering, and in threads at a lower CPU priority (``writer_nice``), so they take the
CPU that requests leave.

Only scheduling lives here: every ``flush_interval_s`` bars and champion answers
(:meth:`LandingWriter.publish`), every ``store_interval_s`` the state store
(:meth:`LandingWriter.store`), both in those threads; ``flush`` (operators, tests,
graceful shutdown) does both now, at normal priority.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from regimes.app.workspace import Workspace
from regimes.config.serving import ServeConfig
from regimes.live.landing import DEFAULT_ROWS_PER_WRITE, Landing, LandingWriter
from regimes.live.shard import landing_folder, shard_folder
from regimes.storage.recording import LiveSink

log = logging.getLogger(__name__)


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority only (Linux: nice is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not allowed: normal priority
        pass


@serve.deployment(max_ongoing_requests=16, graceful_shutdown_timeout_s=60)
class WriterDeployment:
    """Serve replica of the service's :class:`LandingWriter` (see the module docstring)."""

    async def __init__(self, shards: dict[str, int], params: dict, config: dict):
        self.config = ServeConfig.model_validate(config)
        self._background = ThreadPoolExecutor(
            2, "writer", initializer=_lower_priority, initargs=(self.config.writer_nice,)
        )
        self.workspace = Workspace.open(**params)
        serve_dir = self.workspace.settings.serve_dir
        landings = {
            tf: [Landing(landing_folder(shard_folder(serve_dir, tf, k))) for k in range(n)]
            for tf, n in shards.items()
        }
        sinks = {
            tf: LiveSink(
                self.workspace.engine, self.workspace.state_store, self.workspace.registry, tf
            )
            for tf in shards
        }
        self.writer = LandingWriter(landings, sinks, DEFAULT_ROWS_PER_WRITE)
        self._publishing = asyncio.Lock()
        self._storing = asyncio.Lock()
        self._tasks = [
            asyncio.create_task(self._every(self.config.flush_interval_s, self._publish, True)),
            asyncio.create_task(self._every(self.config.store_interval_s, self._store, True)),
        ]

    async def flush(self) -> dict:
        """Everything landed so far, written now at normal priority (operators, tests)."""
        return {"published": await self._publish(), "stored": await self._store()}

    async def counters(self) -> dict:
        backlog = await asyncio.to_thread(self.writer.backlog)
        return {"backlog_files": backlog, "written_rows": dict(self.writer.written)}

    async def _publish(self, background: bool = False) -> int:
        async with self._publishing:
            return await self._run(self.writer.publish, background)

    async def _store(self, background: bool = False) -> int:
        await self._publish(background)  # answers are published first, then stored
        async with self._storing:
            return await self._run(self.writer.store, background)

    async def _run(self, work, background: bool) -> int:
        executor = self._background if background else None  # None: normal priority
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    async def _every(self, seconds: float, work, background: bool) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work(background)
            except Exception:  # logged and tried again next time; nothing is lost
                log.exception("writer: %s failed", work.__name__)

    async def __del__(self):
        """Graceful shutdown: write what is landed."""
        for task in getattr(self, "_tasks", []):
            task.cancel()
        if hasattr(self, "writer"):
            try:
                await self.flush()
            except Exception:
                log.exception("writer: final flush failed")
        if hasattr(self, "workspace"):
            self.workspace.close()
