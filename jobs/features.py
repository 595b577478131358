"""Ray fan-out of the feature store: one task per (symbol, timeframe).

Thin: what a unit computes lives in ``regimes.features.store``; this module only decides
where units run. A unit that fails (or whose worker dies twice) is reported by name and
the others' results are kept: each unit commits its own rows. A worker that dies is
retried twice (three attempts in all) before its unit is reported as failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray

from regimes.app.workspace import Workspace
from regimes.config.loading import PlatformConfig
from regimes.config.settings import Settings
from regimes.features.store import FeatureUnitResult, compute_and_store
from regimes.jobs.runtime import as_completed, ensure_ray


@ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)
def feature_unit(settings: Settings, config: PlatformConfig, symbol: str, timeframe: str) -> dict:
    # The driver checked the locations; a worker only opens them.
    with Workspace(settings, config) as workspace:
        try:
            return compute_and_store(workspace.engine, config, symbol, timeframe).as_dict()
        except Exception as exc:  # reported by name to the driver, never lost silently
            return FeatureUnitResult(
                symbol, timeframe, error=f"{type(exc).__name__}: {exc}"
            ).as_dict()


def run_features_on_ray(
    settings: Settings,
    config: PlatformConfig,
    units: Sequence[tuple[str, str]],
    progress: Callable[[int], Any] | None = None,
) -> list[FeatureUnitResult]:
    """Run every unit as a Ray task; ``progress(n)`` is called as each one finishes."""
    ensure_ray()
    config_ref = ray.put(config)  # once into the object store, not once per task
    pending = {
        feature_unit.remote(settings, config_ref, symbol, timeframe): (symbol, timeframe)
        for symbol, timeframe in units
    }
    results: list[FeatureUnitResult] = []
    for (symbol, timeframe), value, error in as_completed(pending, progress):
        results.append(
            FeatureUnitResult(**value)
            if error is None
            else FeatureUnitResult(symbol, timeframe, error=error)
        )
    return results
