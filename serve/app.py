"""The live service as a Ray Serve application: one ingress, per served timeframe its
engine shard deployments (``engine-<tf>-<k>``), and one writer (``writer``) that takes
what the shards land to the database and the state store.

:func:`build_app` is the typed builder (also the ``import_path`` target of
``infra/serve.yaml`` through :func:`app_builder`); :func:`run_service` starts it on the
Ray this process is connected to and waits until every shard is ready.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

from ray import serve

from regimes.config.serving import ServeConfig
from regimes.live.api_keys import key_digests, load_api_keys
from regimes.serve.ingress import Ingress
from regimes.serve.shard import EngineShardDeployment
from regimes.serve.writer import WriterDeployment
from regimes.timeframes import TIMEFRAMES

APP_NAME = "regimes"
# Replicas wait on I/O or share the machine's cores; a whole CPU each would cap a
# 2-core machine at two replicas.
REPLICA_CPUS = 0.1


def build_app(params: dict, config: ServeConfig, timeframes=TIMEFRAMES, environ=None):
    """The application: ``Ingress`` over ``config.shards[tf]`` shards per timeframe.

    ``params`` rebuild the Workspace in every replica (:meth:`Workspace.params`); the
    API keys are read here from ``environ`` (default: this process's environment) and
    the ingress is given their SHA-256 digests only: a key passed to a replica (its
    ``runtime_env``) would be written to Ray's logs.
    """
    environ = os.environ if environ is None else environ
    settings = config.model_dump()
    counts = {timeframe: config.shards[timeframe] for timeframe in timeframes}
    writer = WriterDeployment.options(
        name="writer", ray_actor_options={"num_cpus": REPLICA_CPUS}
    ).bind(counts, params, settings)
    shards = {}
    for timeframe, n in counts.items():
        shards[timeframe] = [
            EngineShardDeployment.options(
                name=f"engine-{timeframe}-{k}", ray_actor_options={"num_cpus": REPLICA_CPUS}
            ).bind(timeframe, k, n, params, settings, writer)
            for k in range(n)
        ]
    digests = key_digests(load_api_keys(environ))
    return Ingress.options(name="ingress", ray_actor_options={"num_cpus": REPLICA_CPUS}).bind(
        shards, params, settings, writer, digests
    )


def app_builder(args: dict):
    """``serve deploy`` entry (``infra/serve.yaml``): args ``params`` (home, db_url,
    config_dir), optional ``timeframes`` and ``serve`` (overrides of serve.yaml)."""
    from regimes.config.serving import load_serve_config

    params = dict(args["params"])
    config = load_serve_config(params.get("config_dir") or _default_config_dir())
    config = config.model_copy(update=args.get("serve", {}))
    return build_app(
        params, ServeConfig.model_validate(config.model_dump()), args.get("timeframes", TIMEFRAMES)
    )


def _default_config_dir():
    from regimes.config.loading import default_config_dir

    return default_config_dir()


def run_service(params: dict, config: ServeConfig, timeframes, timeout_s: float = 180.0) -> str:
    """Deploy the app on the connected Ray (HTTP on ``config.host:config.port``) and wait
    for ``/readyz``; returns the base URL."""
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(
        build_app(params, config, timeframes), name=APP_NAME, route_prefix="/", blocking=False
    )
    url = f"http://{config.host}:{config.port}"
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as reply:
                if reply.status == 200:
                    return url
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")[:200]
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"the live service at {url} was not ready in {timeout_s:.0f}s: {last}")


def stop_service() -> None:
    """Tear the app and Serve down (replicas checkpoint on the way out)."""
    serve.delete(APP_NAME, _blocking=True)
    serve.shutdown()
