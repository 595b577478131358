"""Scheduled deployments of the ``train`` flow, one per timeframe, from the config's
retrain cadence (1m weekly, 5m/15m monthly, 1h/1d quarterly by default).

``build_deployments`` returns objects ``prefect.serve`` accepts; ``python -m
regimes.flows.deployments --home DIR`` serves them (a long-running process that starts
runs on schedule against the Prefect server at PREFECT_API_URL). ``infra/prefect.yaml``
describes the same deployments for ``prefect deploy`` with a work pool.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

from regimes.app.parser import EXIT_STORE_ERROR, EXIT_USER_ERROR
from regimes.app.workspace import Workspace
from regimes.config.loading import PlatformConfig
from regimes.errors import BadInputError, ConfigError, RegimesError
from regimes.flows.server import check_prefect_api
from regimes.flows.train import train

# Saturday 06:00 UTC for weekly runs (markets closed); the first day of the month or
# quarter at 06:00 UTC otherwise. Bi-weekly has no cron: it is an interval.
CADENCE_CRON = {
    "weekly": "0 6 * * 6",
    "monthly": "0 6 1 * *",
    "quarterly": "0 6 1 1,4,7,10 *",
}
CADENCE_INTERVAL = {"biweekly": timedelta(days=14)}


def schedule_for(cadence: str) -> dict:
    if cadence in CADENCE_CRON:
        return {"cron": CADENCE_CRON[cadence]}
    return {"interval": CADENCE_INTERVAL[cadence]}


def build_deployments(
    config: PlatformConfig, home: str, db_url: str, config_dir: str, seed: int = 0
) -> list:
    deployments = []
    for timeframe, tf_config in config.timeframes.timeframes.items():
        deployments.append(
            train.to_deployment(
                name=f"train-{timeframe}",
                parameters={
                    "timeframes": [timeframe],
                    "home": home,
                    "db_url": db_url,
                    "config_dir": config_dir,
                    "seed": seed,
                },
                description=f"Retrain the {timeframe} regime model ({tf_config.retrain_cadence})",
                tags=["regimes", "train", timeframe],
                **schedule_for(tf_config.retrain_cadence),
            )
        )
    return deployments


def main() -> None:  # the refusals: tests/integration/test_prefect_auth.py
    from prefect import serve

    parser = argparse.ArgumentParser(
        prog="python -m regimes.flows.deployments", description=__doc__
    )
    parser.add_argument("--home")
    parser.add_argument("--db-url")
    parser.add_argument("--config-dir")
    args = parser.parse_args()
    # The server, and that it accepts this client, before anything is served: a
    # scheduler that cannot reach its server would start no run, and say so nowhere.
    api_url = os.environ.get("PREFECT_API_URL")
    try:
        if not api_url:
            raise ConfigError(
                "PREFECT_API_URL is unset; point it at the Prefect server whose schedules "
                "this process serves (e.g. http://127.0.0.1:4200/api)"
            )
        check_prefect_api(api_url)
        with Workspace.open(args.home, args.db_url, args.config_dir) as workspace:
            deployments = build_deployments(workspace.config, **workspace.params())
    except RegimesError as exc:  # the CLI's exit codes: a user's setting, else a store
        user = isinstance(exc, ConfigError | BadInputError)
        code = EXIT_USER_ERROR if user else EXIT_STORE_ERROR
        parser.exit(code, f"{parser.prog}: error: {exc}\n")
    serve(*deployments)


if __name__ == "__main__":  # pragma: no cover
    main()
