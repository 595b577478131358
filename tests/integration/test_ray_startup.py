"""Starting a local Ray keeps cluster token auth on and prints nothing at the user."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from regimes.jobs.runtime import RAY_AUTH_LOGGER, quiet_token_auth_notice

pytestmark = pytest.mark.integration

PROBE = """
import json
import ray
from ray._raylet import AuthenticationMode, get_authentication_mode
from regimes.jobs.runtime import ensure_ray

where = ensure_ray(num_cpus=1)
answer = ray.get(ray.remote(lambda: 41 + 1).remote())
token_auth = get_authentication_mode() == AuthenticationMode.TOKEN
print(json.dumps({"where": where, "token_auth": token_auth, "answer": answer}))
ray.shutdown()
"""


def test_local_ray_starts_with_token_auth_and_without_its_notice(tmp_path):
    # As a user runs it: no auth mode chosen, no cluster address, a fresh directory.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["token_auth"] is True, "the local cluster must keep token authentication on"
    assert out["answer"] == 42 and out["where"] == "Ray local (1 CPUs)"
    assert "Token authentication" not in result.stderr, result.stderr


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_only_the_auth_enabled_notice_is_dropped():
    """Ray's own warning functions: 'enabled' is dropped, 'disabled' (a real risk) is not."""
    from ray._private.authentication import authentication_token_setup as ray_auth

    auth_logger = logging.getLogger(RAY_AUTH_LOGGER)
    assert ray_auth.logger is auth_logger, "Ray moved its auth logger: update RAY_AUTH_LOGGER"
    collect = _Collect()
    filters_before = list(auth_logger.filters)
    for existing in filters_before:  # a session Ray may have attached it already
        auth_logger.removeFilter(existing)
    auth_logger.addHandler(collect)
    try:
        ray_auth._warn_token_auth_enabled()
        assert any("is enabled" in m for m in collect.messages), "the probe cannot see Ray's log"
        collect.messages.clear()
        quiet_token_auth_notice()
        quiet_token_auth_notice()  # idempotent: one filter, not two
        ray_auth._warn_token_auth_enabled()
        ray_auth._warn_token_auth_disabled()
        filters_added = list(auth_logger.filters)
    finally:
        auth_logger.removeHandler(collect)
        auth_logger.filters[:] = filters_before
    assert len(filters_added) == 1
    assert len(collect.messages) == 1 and "is disabled" in collect.messages[0]
