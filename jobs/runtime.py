"""Starting or joining Ray: a local Ray by default, an existing cluster when
``RAY_ADDRESS`` is set. Telemetry off; one BLAS/OpenMP thread per task."""

from __future__ import annotations

import logging
import os
import socket

from regimes.errors import ConfigError

logger = logging.getLogger(__name__)

# Each task owns one core: numpy/scikit-learn/torch must not start thread pools of their
# own on top of Ray's parallelism.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "DO_NOT_TRACK": "1"}

# Ray >= 2.60 turns cluster token auth on for every new local ray.init() and logs a
# warning that says so (and how to opt out). Auth stays on; the notice is dropped because
# the user did nothing wrong. Only that message: the one saying auth is *disabled* stays.
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_AUTH_ENABLED_NOTICE = "Token authentication is enabled for this Ray cluster"


class DropTokenAuthEnabledNotice(logging.Filter):
    """Drops Ray's "token authentication is enabled" notice; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_AUTH_ENABLED_NOTICE)


def quiet_token_auth_notice() -> None:
    """Attach :class:`DropTokenAuthEnabledNotice` to Ray's auth logger (once per process)."""
    auth_logger = logging.getLogger(RAY_AUTH_LOGGER)
    if not any(isinstance(f, DropTokenAuthEnabledNotice) for f in auth_logger.filters):
        auth_logger.addFilter(DropTokenAuthEnabledNotice())


def ensure_ray(num_cpus: int | None = None) -> str:
    """Initialise Ray once per process; returns a description of where work runs."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return _where(ray)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_ray_address(address)
        ray.init(
            address=address,
            runtime_env={"env_vars": {**SINGLE_THREAD_ENV, **QUIET_ENV}},
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    else:
        # A local Ray: its workers inherit this process's environment.
        for key, value in SINGLE_THREAD_ENV.items():
            os.environ.setdefault(key, value)
        quiet_token_auth_notice()
        # address="local": a Ray of its own, never a cluster some other process started
        # on this machine (ray.init() alone would join the newest one it finds).
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    return _where(ray)


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``RAY_ADDRESS`` (``host:port`` of a cluster's GCS) that nothing answers at,
    in one line before any work starts: ``ray.init`` would otherwise retry for a minute
    and print its own warnings. ``auto``, ``local`` and ``ray://`` client addresses are
    left to Ray."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"RAY_ADDRESS={address}: expected host:port of a Ray cluster's head")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"RAY_ADDRESS={address}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start it (`ray start --head`) or unset RAY_ADDRESS to use a local Ray"
        ) from None


def shutdown_ray() -> None:
    """Disconnect from Ray (stopping the local cluster this process started), if it is
    connected; a process that ends with ``os._exit`` must do this itself."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _where(ray) -> str:
    resources = ray.cluster_resources()
    address = os.environ.get("RAY_ADDRESS") or "local"
    return f"Ray {address} ({int(resources.get('CPU', 0))} CPUs)"


def as_completed(pending: dict, progress=None):
    """Yield ``(key, result, error)`` for each Ray task of ``pending`` ({ref: key}) as it
    finishes; ``error`` is set when the task failed for good (e.g. its worker died on
    every retry). ``progress(1)`` is called per task."""
    import ray

    pending = dict(pending)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            key = pending.pop(ref)
            try:
                yield key, ray.get(ref), None
            except Exception as exc:
                yield key, None, f"{type(exc).__name__}: {exc}"
            if progress is not None:
                progress(1)
