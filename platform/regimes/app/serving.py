"""The ``serve`` use case: the live service (``regimes.serve``) on the local Ray or the
cluster at ``RAY_ADDRESS``, over the Workspace's database, registry and state store.

:func:`start_service` returns a running :class:`LiveService` (the demo and the
benchmark use it); :func:`serve` runs one until interrupted or for ``--for`` seconds.
Ray and Ray Serve are imported only inside the functions (this module is part of the
engine-free core import graph).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from regimes.app.progress import Notify, silent
from regimes.app.workspace import Workspace
from regimes.config.serving import ServeConfig, load_serve_config
from regimes.errors import BadInputError
from regimes.live.api_keys import KEYS_ENV, load_api_keys
from regimes.timeframes import TIMEFRAMES


@dataclass(frozen=True)
class ServeRequest:
    timeframes: tuple[str, ...] | None = None
    host: str | None = None
    port: int | None = None
    duration_s: float | None = None  # None: until interrupted


@dataclass
class LiveService:
    """A running live service; :meth:`stop` checkpoints every shard and tears it down."""

    url: str
    timeframes: tuple[str, ...]
    shards: dict[str, int]
    writes_enabled: bool
    started_in_s: float
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if not self.stopped:
            from regimes.serve.app import stop_service

            stop_service()
            self.stopped = True

    def __enter__(self) -> LiveService:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


@dataclass(frozen=True)
class ServiceRun:
    url: str
    timeframes: tuple[str, ...]
    shards: dict[str, int]
    seconds: float

    def summary(self) -> list[str]:
        return [f"served {', '.join(self.timeframes)} at {self.url} for {self.seconds:.0f}s"]

    def as_dict(self) -> dict:
        return {
            "url": self.url,
            "timeframes": list(self.timeframes),
            "shards": self.shards,
            "seconds": round(self.seconds, 1),
        }


def service_config(workspace: Workspace, request: ServeRequest) -> ServeConfig:
    """serve.yaml of the Workspace's config folder, with the request's host and port."""
    config = load_serve_config(workspace.config_dir)
    update = {k: v for k, v in (("host", request.host), ("port", request.port)) if v}
    return ServeConfig.model_validate({**config.model_dump(), **update})


def served_timeframes(workspace: Workspace, request: ServeRequest) -> tuple[str, ...]:
    """The timeframes asked for (default: every one with a champion); each needs one."""
    registry = workspace.registry
    asked = request.timeframes or tuple(tf for tf in TIMEFRAMES if registry.champion(tf))
    if not asked:
        raise BadInputError("no timeframe has a champion model; train and promote one first")
    missing = [tf for tf in asked if registry.champion(tf) is None]
    if missing:
        raise BadInputError(
            f"no champion model for {', '.join(missing)}; promote one (`regimes promote`) "
            "or leave the timeframe out (--timeframe)"
        )
    return tuple(asked)


def start_service(workspace: Workspace, request: ServeRequest, say: Notify = silent) -> LiveService:
    """Start the service and wait until every shard is ready."""
    from regimes.jobs.runtime import ensure_ray
    from regimes.serve.app import run_service

    config = service_config(workspace, request)
    timeframes = served_timeframes(workspace, request)
    keys = load_api_keys(os.environ)
    started = time.perf_counter()
    where = ensure_ray()
    say(f"starting the live service on {where}: {', '.join(timeframes)}")
    url = run_service(workspace.params(), config, timeframes)
    service = LiveService(
        url,
        timeframes,
        {tf: config.shards[tf] for tf in timeframes},
        bool(keys),
        time.perf_counter() - started,
    )
    say(f"live service ready at {url} in {service.started_in_s:.1f}s (API at {url}/v1/docs)")
    if not keys:
        say(f"writes are refused until an API key is set ({KEYS_ENV})")
    return service


def serve(workspace: Workspace, request: ServeRequest, say: Notify = silent) -> ServiceRun:
    """Run the service until interrupted (Ctrl-C) or for ``request.duration_s``."""
    if request.duration_s is not None and request.duration_s <= 0:
        raise BadInputError(
            f"--for: expected a positive number of seconds, got {request.duration_s}"
        )
    started = time.perf_counter()
    with start_service(workspace, request, say) as service:
        try:
            if request.duration_s is None:
                while True:
                    time.sleep(3600)
            time.sleep(request.duration_s)
        except KeyboardInterrupt:
            say("stopping: every shard writes what it holds and checkpoints")
    return ServiceRun(
        service.url, service.timeframes, service.shards, time.perf_counter() - started
    )
