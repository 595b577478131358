"""The ``regimes`` command line.

Every command prints a human summary to stderr and, where it produces something, one
JSON object as the last line of stdout. A user mistake exits non-zero with a one-line
reason on stderr, never a traceback. The CLI only parses (:mod:`regimes.app.parser`),
calls a use case with the Workspace, and formats its result; a result with failed units
exits with code 4.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from regimes.app import backfill as backfill_cases
from regimes.app import data, features, replay, rollout, states, training
from regimes.app import report as report_cases
from regimes.app.executors import executor_named
from regimes.app.orchestrators import orchestrator_named
from regimes.app.output import one_line, progress_bar, say
from regimes.app.parser import (
    EXIT_GATE_FAILED,
    EXIT_PARTIAL,
    EXIT_STORE_ERROR,
    EXIT_USER_ERROR,
    build_parser,
)
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError, ConfigError, RegimesError

__all__ = ["build_parser", "main"]


def _tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None


def _parse_grid(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"--grid: not valid JSON ({exc.msg}); e.g. '{{\"K\": [4, 6]}}'"
        ) from None
    if not isinstance(grid, dict):
        raise BadInputError('--grid: expected a JSON object such as {"K": [4, 6], "d": [6]}')
    return grid


# --------------------------------------------------------------------------- commands
# Each takes the Workspace and the parsed arguments and returns the use case's result.


def run_synth(workspace: Workspace, args: argparse.Namespace):
    request = data.SynthRequest(
        args.symbols,
        args.days,
        args.seed,
        args.start,
        args.missing_rate,
        market=args.market,
        prefix=args.prefix,
        variant=args.variant,
    )
    return data.synth(workspace, request, progress_bar)


def run_ingest(workspace: Workspace, args: argparse.Namespace):
    request = data.IngestRequest(
        args.file,
        args.symbol,
        args.timeframe,
        args.drop_bad,
        args.tz,
        args.ts_format,
        market=args.market,
    )
    return data.ingest(workspace, request)


def run_resample(workspace: Workspace, args: argparse.Namespace):
    request = data.ResampleRequest(_tuple(args.symbols), tuple(args.timeframes))
    return data.resample(workspace, request, progress_bar)


def run_features(workspace: Workspace, args: argparse.Namespace):
    request = features.FeaturesRequest(_tuple(args.timeframe), _tuple(args.symbols))
    executor = executor_named(args.executor)
    return features.features(workspace, request, executor, say, progress_bar)


def run_encode(workspace: Workspace, args: argparse.Namespace):
    return features.encode(workspace, features.EncodeRequest(_tuple(args.timeframe), args.encoder))


def run_train(workspace: Workspace, args: argparse.Namespace):
    request = training.TrainRequest(
        _tuple(args.timeframe),
        _tuple(args.symbols),
        _parse_grid(args.grid),
        args.seed,
        args.scope,
        report=args.report,
    )
    return training.train(
        workspace,
        request,
        executor_named(args.executor),
        orchestrator_named(args.orchestrator),
        say,
    )


def run_models(workspace: Workspace, args: argparse.Namespace):
    return training.models(workspace, training.ModelsRequest(args.timeframe))


def _actor(args: argparse.Namespace) -> str:
    import getpass

    if args.actor:
        return args.actor
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (e.g. a bare container)
        return "cli"


def run_promote(workspace: Workspace, args: argparse.Namespace):
    request = rollout.PromoteRequest(
        args.timeframe, args.model_id, _actor(args), args.reason, to=args.to, force=args.force
    )
    return rollout.promote(workspace, request, say)


def run_rollout(workspace: Workspace, args: argparse.Namespace):
    from regimes.app.rollouts import RolloutRequest, run_rollout

    request = RolloutRequest(args.timeframe, args.model_id, _actor(args), args.wait)
    return run_rollout(workspace, request, orchestrator_named(args.orchestrator), say)


def run_monitor(workspace: Workspace, args: argparse.Namespace):
    from regimes.app.monitor import MonitorRequest, run_monitor

    request = MonitorRequest(
        tuple(args.timeframes) if args.timeframes else None,
        act=args.act,
        seed=args.seed,
        shadow_wait_s=args.wait,
        replay_shadow=args.replay_shadow,
        now=args.now,
    )
    return run_monitor(
        workspace,
        request,
        orchestrator_named(args.orchestrator),
        executor_named(args.executor),
        say,
    )


def run_drift(workspace: Workspace, args: argparse.Namespace):
    from regimes.app.drift import DriftRequest, drift

    request = DriftRequest(
        args.timeframe, args.model_id, _tuple(args.reference), _tuple(args.current)
    )
    return drift(workspace, request, say)


def run_rollback(workspace: Workspace, args: argparse.Namespace):
    request = rollout.RollbackRequest(
        args.timeframe, _actor(args), args.reason, args.symbol, to=args.to
    )
    return rollout.rollback(workspace, request)


def run_replay(workspace: Workspace, args: argparse.Namespace):
    request = replay.ReplayRequest(
        args.timeframe, args.out, args.model_id, _tuple(args.symbols), args.start, args.end
    )
    return replay.replay(workspace, request, progress_bar)


def run_backfill(workspace: Workspace, args: argparse.Namespace):
    request = backfill_cases.BackfillRequest(
        args.timeframe,
        args.model_id,
        _tuple(args.symbols),
        args.symbols_per_unit,
        args.rows_per_commit,
    )
    return backfill_cases.backfill(
        workspace,
        request,
        executor_named(args.executor),
        orchestrator_named(args.orchestrator),
        say,
        progress_bar,
    )


def run_states(workspace: Workspace, args: argparse.Namespace):
    if args.compact:
        request = states.CompactRequest(args.timeframe, args.model_id, args.vacuum_hours)
        return states.compact_states(workspace, request)
    request = states.ExportRequest(
        args.timeframe,
        args.model_id,
        args.out,
        _tuple(args.symbols),
        args.start,
        args.end,
        args.format,
    )
    return states.export_states(workspace, request)


def run_serve(workspace: Workspace, args: argparse.Namespace):
    from regimes.app.serving import ServeRequest, serve

    request = ServeRequest(_tuple(args.timeframes), args.host, args.port, args.duration_s)
    return serve(workspace, request, say)


def run_report(workspace: Workspace, args: argparse.Namespace):
    request = report_cases.ReportRequest(
        args.timeframe, args.model_id, _tuple(args.symbols), args.start, args.end
    )
    return report_cases.report(workspace, request)


def run_demo(workspace: Workspace, args: argparse.Namespace):
    from regimes.app.demo import DemoRequest, run

    request = DemoRequest(args.symbols, args.days, args.seed, args.executor)
    return run(workspace, request, say=say, progress=progress_bar)


COMMANDS: dict[str, Callable[[Workspace, argparse.Namespace], Any]] = {
    "synth": run_synth,
    "ingest": run_ingest,
    "resample": run_resample,
    "features": run_features,
    "encode": run_encode,
    "train": run_train,
    "models": run_models,
    "promote": run_promote,
    "rollback": run_rollback,
    "drift": run_drift,
    "rollout": run_rollout,
    "monitor": run_monitor,
    "replay": run_replay,
    "backfill": run_backfill,
    "states": run_states,
    "serve": run_serve,
    "report": run_report,
    "demo": run_demo,
}


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(args)
    finally:
        # Arrow / Delta objects freed now, while their native thread pools are alive:
        # freed during interpreter teardown they can abort the process
        # ("terminate called without an active exception", apache/arrow#34314).
        gc.collect()


def entry_point() -> None:
    """The ``regimes`` command: :func:`main`, then end the process without interpreter
    teardown.

    Arrow's and delta-rs's native thread pools can abort a process while C++ static
    objects are destroyed at exit ("terminate called without an active exception",
    apache/arrow#34314), turning a finished command's exit code into -6 after its answer
    was printed. Everything is written and closed by then, so the process ends with
    ``os._exit``; the one thing teardown would still do, stopping a local Ray this
    process started, is done first. A run that loaded Prefect exits normally: Prefect's
    exit handlers stop what it started in the process.
    """
    import os
    import traceback

    code = 1
    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:  # a bug keeps its traceback
        traceback.print_exc()
    if "prefect" in sys.modules:
        # Prefect's exit handlers stop what it started in this process (e.g. a server it
        # started on its own): a normal exit, as before.
        sys.exit(code)
    if "ray" in sys.modules:
        from regimes.jobs.runtime import shutdown_ray

        shutdown_ray()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _writes(args: argparse.Namespace) -> bool:
    """Whether the command writes into the Workspace's locations (they are then checked
    before any work starts); listing models, replaying to a file and exporting states
    only read."""
    if args.command in ("models", "replay"):
        return False
    return not (args.command == "states" and not args.compact)


def _run(args: argparse.Namespace) -> int:
    command = COMMANDS[args.command]
    try:
        with Workspace.open(
            args.home, args.db_url, args.config_dir, check_locations=_writes(args)
        ) as workspace:
            result = command(workspace, args)
    except (BadInputError, ConfigError) as exc:
        say(f"regimes {args.command}: error: {one_line(exc)}")
        return EXIT_USER_ERROR
    except RegimesError as exc:
        say(f"regimes {args.command}: error: {one_line(exc)}")
        return EXIT_STORE_ERROR
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        say(f"regimes {args.command}: error: {exc.strerror or exc}{where}")
        return EXIT_STORE_ERROR
    except KeyboardInterrupt:
        say(f"regimes {args.command}: interrupted")
        return 130
    for line in result.summary():
        say(line)
    print(json.dumps(result.as_dict(), default=str), flush=True)
    if getattr(result, "passed", True) is False:
        return EXIT_GATE_FAILED
    return EXIT_PARTIAL if getattr(result, "failed", None) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
