"""The ``regimes`` argument parser: every command's flags and help texts.

Only parsing lives here; :mod:`regimes.app.cli` calls the use cases and formats.
"""

from __future__ import annotations

import argparse
from datetime import date

from regimes import __version__
from regimes.timeframes import TIMEFRAMES

EXIT_USER_ERROR = 2
EXIT_STORE_ERROR = 3
EXIT_PARTIAL = 4
EXIT_GATE_FAILED = 5  # `drift`: the report was written and a gate check failed


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _timeframe(text: str) -> str:
    if text not in TIMEFRAMES:
        raise argparse.ArgumentTypeError(
            f"unknown timeframe {text!r}; expected one of {', '.join(TIMEFRAMES)}"
        )
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump: the user asked for --help
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="regimes",
        description=(
            "Multi-timeframe market regimes: latent state vectors z_t and a Gaussian HMM per "
            "timeframe. Human summaries go to stderr; where a command produces something, "
            "the last line of stdout is one JSON object."
        ),
        epilog=(
            "Precedence of settings: CLI option > environment variable > config file > "
            "default. Environment: REGIMES_HOME, REGIMES_DB_URL, REGIMES_CONFIG_DIR."
        ),
    )
    parser.add_argument("--version", action="version", version=f"regimes {__version__}")
    parser.add_argument(
        "--home",
        help="where outputs go (database, models/, states/, synth/); "
        "env REGIMES_HOME; default: the current directory",
    )
    parser.add_argument(
        "--db-url",
        help="SQLAlchemy database URL; env REGIMES_DB_URL; default sqlite:///<home>/regimes.db "
        "(a URL with a password: in REGIMES_DB_URL only, never passed to flows or services)",
    )
    parser.add_argument(
        "--config-dir",
        help="directory with features.yaml and timeframes.yaml; env REGIMES_CONFIG_DIR; "
        "default <home>/config if present, else the default config shipped with the package",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_synth(sub)
    _add_ingest(sub)
    _add_resample(sub)
    _add_features(sub)
    _add_encode(sub)
    _add_train(sub)
    _add_models(sub)
    _add_promote(sub)
    _add_rollback(sub)
    _add_drift(sub)
    _add_rollout(sub)
    _add_monitor(sub)
    _add_replay(sub)
    _add_backfill(sub)
    _add_states(sub)
    _add_serve(sub)
    _add_report(sub)
    _add_demo(sub)
    return parser


def _add_synth(sub) -> None:
    synth = sub.add_parser(
        "synth",
        help="generate a synthetic 1m market with known regimes",
        description="Generate multi-symbol 1-minute OHLCV with known slow and fast regimes; "
        "write the bars to the database and the truth to <home>/synth/.",
    )
    synth.add_argument("--symbols", type=int, default=20, help="number of symbols (default 20)")
    synth.add_argument("--days", type=int, default=60, help="trading days (default 60)")
    synth.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (default 0; with --variant, the variant's own)",
    )
    synth.add_argument(
        "--start",
        type=_date,
        default=date(2024, 1, 2),
        help="first calendar day, YYYY-MM-DD (default 2024-01-02)",
    )
    synth.add_argument(
        "--missing-rate",
        type=float,
        default=0.002,
        help="fraction of 1m bars dropped as missing (default 0.002)",
    )
    synth.add_argument(
        "--market",
        help="a market of markets.yaml (e.g. fx for 24x5, crypto for 24x7, or one on an "
        "exchange calendar such as XNYS with its holidays); recorded for the symbols; truth "
        "then goes to "
        "<home>/synth/<market>/ (default: the session of timeframes.yaml)",
    )
    synth.add_argument(
        "--variant",
        help="a named market of other regimes (regimes.data.synth_variants, e.g. k2-vol: "
        "2 regimes of volatility only; k5: 5 regimes); an unknown name is refused with the "
        "list (default: the default market, the demo's)",
    )
    synth.add_argument(
        "--prefix", default="SYN", help="symbol names are PREFIX000, PREFIX001, ... (default SYN)"
    )


def _add_ingest(sub) -> None:
    ingest = sub.add_parser(
        "ingest",
        help="load OHLCV bars from a CSV or Parquet file",
        description="Load bars (columns ts, open, high, low, close, volume) for one symbol and "
        "timeframe. Any bad row refuses the whole file unless --drop-bad is given.",
    )
    ingest.add_argument("file", help="a .csv or .parquet file")
    ingest.add_argument("--symbol", required=True, help="symbol name, e.g. SPX")
    ingest.add_argument(
        "--timeframe", required=True, help=f"timeframe of the bars: {', '.join(TIMEFRAMES)}"
    )
    ingest.add_argument(
        "--drop-bad",
        action="store_true",
        help="write the good rows and report the bad ones instead of refusing",
    )
    ingest.add_argument(
        "--tz", default="UTC", help="time zone of timestamps without an offset (default UTC)"
    )
    ingest.add_argument(
        "--ts-format",
        help="strftime format of the ts column, e.g. '%%d/%%m/%%Y %%H:%%M' (default: ISO 8601, "
        "or one format inferred from the first row and applied to all)",
    )
    ingest.add_argument(
        "--market",
        help="the symbol's market in markets.yaml, recorded for later steps (default: the "
        "market markets.yaml maps it to, the one recorded earlier, or the default market)",
    )


def _add_resample(sub) -> None:
    resample = sub.add_parser(
        "resample",
        help="align 1m bars to the session, mark gaps, build higher timeframes",
        description="Align stored 1m bars to the session grid (missing minutes become gap "
        "rows) and resample them into higher timeframes anchored at the session open.",
    )
    resample.add_argument("--symbols", nargs="+", help="symbols (default: all with 1m bars)")
    resample.add_argument(
        "--timeframes",
        nargs="+",
        type=_timeframe,
        default=list(TIMEFRAMES[1:]),
        help="target timeframes (default: 5m 15m 1h 1d)",
    )


def _add_features(sub) -> None:
    features = sub.add_parser(
        "features",
        help="compute the 21 features from stored bars into computed_features",
        description="Compute each timeframe's selected features for every stored (symbol, "
        "timeframe) and replace their rows in computed_features (idempotent). Units run as "
        "Ray tasks (local Ray, or the cluster at RAY_ADDRESS) or in this process. A failed "
        f"unit is reported by name, the others are kept, and the exit code is {EXIT_PARTIAL}.",
    )
    features.add_argument(
        "--timeframe",
        "--timeframes",
        nargs="+",
        type=_timeframe,
        help="timeframes (default: all five)",
    )
    features.add_argument("--symbols", nargs="+", help="symbols (default: all with bars)")
    features.add_argument(
        "--executor", choices=("ray", "local"), default="ray", help="where units run (default ray)"
    )


def _add_encode(sub) -> None:
    encode = sub.add_parser(
        "encode",
        help="fit selection + scaling + encoder per timeframe and report the state vectors",
        description="Per timeframe: load stored features, take the first walk-forward fold, "
        "fit feature selection, stationarity, robust+Yeo-Johnson scaling and the encoder on "
        "its training window only (leakage guard checked), choose d from the explained-"
        "variance curve, and report d, explained variance and the selected features. "
        "Curves go to <home>/reports/state_vectors/.",
    )
    encode.add_argument(
        "--timeframe",
        "--timeframes",
        nargs="+",
        type=_timeframe,
        help="timeframes (default: all five)",
    )
    encode.add_argument(
        "--encoder", choices=("pca", "window", "vae"), default="pca", help="encoder (default pca)"
    )


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train each timeframe's regime model: walk-forward grid, winner, artifact",
        description="Per timeframe: a grid of encoder x d x K x covariance over walk-forward "
        "folds (cells fan out on Ray), the winner by the documented selection rule refitted "
        "and packaged into models/timeframe=TF/model_id=ID/ and registered as a candidate. "
        "Runs as the Prefect flow 'train' (a local Prefect server is started when "
        "PREFECT_API_URL is unset).",
    )
    train.add_argument(
        "--timeframe",
        "--timeframes",
        nargs="+",
        type=_timeframe,
        help="timeframes (default: all five)",
    )
    train.add_argument("--symbols", nargs="+", help="the universe (default: all with features)")
    train.add_argument(
        "--grid",
        help='JSON, e.g. \'{"K": [4, 6], "d": [6, 8], '
        '"covariance": ["diag"], "encoder": ["pca"]}\' (default: pca, the lowest '
        "d, K at the bottom, middle and top of the range)",
    )
    train.add_argument("--seed", type=int, default=0, help="the one seed of the run (default 0)")
    train.add_argument(
        "--scope",
        choices=("pooled", "symbol"),
        default="pooled",
        help="one model per timeframe over all symbols (default) or one per (timeframe, symbol)",
    )
    train.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="where grid cells run (default ray)",
    )
    train.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="skip the validation report written for every trained model",
    )
    train.add_argument(
        "--orchestrator",
        choices=("prefect", "direct"),
        default="prefect",
        help="run through the Prefect flow (default) or directly",
    )


def _add_models(sub) -> None:
    models = sub.add_parser("models", help="list the model registry (lifecycle per timeframe)")
    models.add_argument("--timeframe", type=_timeframe, help="one timeframe only")


def _actor_and_reason(parser) -> None:
    parser.add_argument(
        "--reason", required=True, help="why (recorded with the transition in the registry)"
    )
    parser.add_argument(
        "--actor",
        default=None,
        help="who (recorded with the transition; default: cli:<user name>)",
    )


def _add_promote(sub) -> None:
    promote = sub.add_parser(
        "promote",
        help="make a registered model the champion (or a shadow) of its scope",
        description="One atomic registry commit: --to champion (default) makes a candidate "
        "or shadow the champion of its timeframe (and symbol, for per-symbol models), "
        "retiring the previous champion and keeping it for `regimes rollback`; --to shadow "
        "lets a candidate run beside the champion. The gates of config/gates.yaml run "
        "first: a drift report (to shadow and to champion) and, to replace a champion, "
        "the shadow's agreement with it over their stored answers; a failing check "
        "refuses the promotion, listing every failed check, and nothing changes. "
        "--force skips the gates and is recorded as such. A promotion that races another "
        "is refused with a one-line conflict naming what changed.",
    )
    promote.add_argument("--timeframe", required=True, type=_timeframe)
    promote.add_argument("--model-id", required=True)
    promote.add_argument(
        "--to", choices=("champion", "shadow"), default="champion", help="the new role"
    )
    promote.add_argument(
        "--force",
        action="store_true",
        help="skip the gates (the transition records that it was forced, with --reason)",
    )
    _actor_and_reason(promote)


def _add_rollback(sub) -> None:
    rollback = sub.add_parser(
        "rollback",
        help="retire the champion and bring back the last good one",
        description="One atomic registry commit: the champion of the scope becomes retired "
        "and the champion before it (or --to, an earlier good champion) is champion again "
        "(refused when there is none).",
    )
    rollback.add_argument("--timeframe", required=True, type=_timeframe)
    rollback.add_argument("--symbol", help="the scope's symbol, for per-symbol models")
    rollback.add_argument(
        "--to",
        metavar="MODEL_ID",
        help="the earlier champion to return to (default: the newest good one); a champion "
        "that was itself rolled back is not good and is refused",
    )
    _actor_and_reason(rollback)


def _add_drift(sub) -> None:
    drift = sub.add_parser(
        "drift",
        help="a model's drift report: PSI/KL of features, z, states (Evidently) and gates",
        description="Compares a reference window (default: the model's training window) "
        "with a current window (default: the newest bars, config/gates.yaml current_bars) "
        "per selected feature, per z dimension, on the state occupancy and the predictive "
        "log-likelihood (binned on the reference's quantiles, PSI and KL by Evidently), "
        "and for a candidate its occupancy vs the champion's on the same bars. Writes the "
        "HTML and JSON under reports/drift/<tf>/<model_id>/ and the summary to the "
        "drift_reports Delta table; exits 5 when a gate check fails.",
    )
    drift.add_argument("--timeframe", required=True, type=_timeframe)
    drift.add_argument("--model-id", required=True)
    drift.add_argument(
        "--reference", nargs=2, metavar=("START", "END"), help="reference window, UTC"
    )
    drift.add_argument("--current", nargs=2, metavar=("START", "END"), help="current window, UTC")


def _add_rollout(sub) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="a candidate through drift gate -> shadow -> agreement gate -> champion",
        description="Runs the rollout of --model-id as the Prefect flow 'rollout' (or "
        "directly): the drift gate, then shadow (the live service runs it beside the "
        "champion), then - once the shadow has answered shadow_min_bars bars beside the "
        "champion (their stored answers; --wait seconds at most) - the drift and agreement "
        "gates, then champion. A failing gate stops it with its reasons and leaves the "
        "model where it was; one rollout per timeframe at a time.",
    )
    rollout.add_argument("--timeframe", required=True, type=_timeframe)
    rollout.add_argument("--model-id", required=True)
    rollout.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for the shadow's bars (0)"
    )
    rollout.add_argument(
        "--orchestrator", choices=("prefect", "direct"), default="prefect", help="how it runs"
    )
    rollout.add_argument("--actor", help="who (recorded; default: cli:<user name>)")


def _add_monitor(sub) -> None:
    monitor = sub.add_parser(
        "monitor",
        help="retrain triggers of each champion; with --act, retrain and roll out",
        description="Per timeframe with a champion: the retrain triggers (cadence since "
        "the promotion; log-likelihood decay and z-score against trailing windows; entropy "
        "spikes; occupancy collapse; PSI/KL drift of features, z and states - thresholds "
        "in config/gates.yaml). With --act, a timeframe whose trigger fired is retrained "
        "and its new model rolled out (or its shadow's rollout resumed). Verdicts go to "
        "reports/monitor/. Runs as the Prefect flow 'monitor' (scheduled in "
        "infra/prefect.yaml) or directly.",
    )
    monitor.add_argument("--timeframe", nargs="+", type=_timeframe, dest="timeframes")
    monitor.add_argument("--act", action="store_true", help="retrain and roll out when fired")
    monitor.add_argument(
        "--replay-shadow",
        action="store_true",
        help="give a new shadow answers over the stored bars (a backfill) instead of "
        "waiting for live bars",
    )
    monitor.add_argument(
        "--wait", type=float, default=0.0, help="seconds a rollout waits for shadow bars (0)"
    )
    monitor.add_argument("--now", help="the time the cadence counts to (default now, UTC)")
    monitor.add_argument("--seed", type=int, default=0, help="seed of a retrain (default 0)")
    monitor.add_argument(
        "--orchestrator", choices=("prefect", "direct"), default="prefect", help="how it runs"
    )
    monitor.add_argument(
        "--executor", choices=("ray", "local"), default="local", help="where a retrain's grid runs"
    )


def _add_replay(sub) -> None:
    replay = sub.add_parser(
        "replay",
        help="push stored bars through the live engine bar by bar; write its answers",
        description="Replays stored bars through the inference engine of a model (the "
        "champion model by default) exactly as a live feed would, from the first stored "
        "bar so warm-up is real, and writes the answers from --start on to Parquet.",
    )
    replay.add_argument("--timeframe", required=True, type=_timeframe)
    replay.add_argument("--model-id", help="default: the timeframe's champion model")
    replay.add_argument("--symbols", nargs="+")
    replay.add_argument("--start", help="first bar to write (UTC, e.g. 2024-03-01T00:00Z)")
    replay.add_argument("--end", help="bars before this time only")
    replay.add_argument("--out", required=True, help="the Parquet file to write")


def _add_backfill(sub) -> None:
    backfill = sub.add_parser(
        "backfill",
        help="a registered model's states over the stored history, into the Delta store",
        description="Computes the states of --model-id for every stored bar of its "
        "timeframe (the engine's offline path, equal to a live replay), units of symbols "
        "fanned out on Ray, merged into the Delta state table (<home>/states or "
        "REGIMES_STATES_URI) with the newest state per symbol mirrored to current_states. "
        "Resumable: running it again writes only what is missing.",
    )
    backfill.add_argument("--timeframe", required=True, type=_timeframe)
    backfill.add_argument("--model-id", required=True)
    backfill.add_argument("--symbols", nargs="+", help="default: every symbol with bars")
    backfill.add_argument(
        "--symbols-per-unit", type=int, default=1, help="symbols per Ray task (default 1)"
    )
    backfill.add_argument(
        "--rows-per-commit",
        type=int,
        default=50_000,
        help="most rows per Delta commit, whole UTC days (default 50000)",
    )
    backfill.add_argument(
        "--executor", choices=("ray", "local"), default="ray", help="where units run"
    )
    backfill.add_argument(
        "--orchestrator",
        choices=("prefect", "direct"),
        default="prefect",
        help="run through the Prefect flow 'backfill' (default; PREFECT_API_URL or a "
        "local server under <home>/prefect) or call the units directly",
    )


def _add_states(sub) -> None:
    states = sub.add_parser(
        "states",
        help="export state history from the Delta store (or --compact it)",
        description="Reads the states of one model (partition pruning on timeframe, "
        "model_id, symbol and date) and writes them with the state-store columns as "
        "csv, parquet or json lines. With --compact, rewrites small files "
        "(optionally of one --timeframe / --model-id) and, with --vacuum-hours, deletes "
        "files older versions no longer need.",
    )
    states.add_argument("--timeframe", type=_timeframe)
    states.add_argument("--model-id")
    states.add_argument("--symbols", nargs="+")
    states.add_argument("--start", help="first ts (inclusive, timezone-aware)")
    states.add_argument("--end", help="last ts (exclusive, timezone-aware)")
    states.add_argument("--format", choices=("csv", "parquet", "json"), default="parquet")
    states.add_argument("--out", help="the file to write")
    states.add_argument("--compact", action="store_true", help="compact instead of export")
    states.add_argument(
        "--vacuum-hours", type=int, help="with --compact: vacuum files older than this"
    )


def _add_serve(sub) -> None:
    serve = sub.add_parser(
        "serve",
        help="the live service: HTTP API under /v1 on Ray Serve (champions and shadows)",
        description="Runs the live service on a local Ray (or the cluster at RAY_ADDRESS): "
        "POST /v1/bars/{timeframe} (needs an API key from REGIMES_API_KEYS or "
        "REGIMES_API_KEYS_FILE), GET /v1/states, /v1/states/{symbol}, /v1/models, "
        "/v1/shadow/{timeframe}, /healthz, /readyz, /metrics; OpenAPI at "
        "/v1/openapi.json. Settings in serve.yaml of the config folder (shards per "
        "timeframe, limits, flush and checkpoint cadence). Runs until Ctrl-C.",
    )
    serve.add_argument(
        "--timeframe",
        dest="timeframes",
        nargs="+",
        type=_timeframe,
        help="timeframes to serve (default: every one with a champion)",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, from serve.yaml)")
    serve.add_argument("--port", type=int, help="port (default 8000, from serve.yaml)")
    serve.add_argument(
        "--for",
        dest="duration_s",
        type=float,
        help="stop after this many seconds (default: run until interrupted)",
    )


def _add_report(sub) -> None:
    report = sub.add_parser(
        "report",
        help="write a model's validation report (self-contained HTML + JSON)",
        description="Reads the model's stored states (Delta) and bars and writes "
        "<home>/reports/validation/TF/MODEL_ID/report.html (figures embedded, opens "
        "offline) and report.json (every figure it shows, and the verdicts the promotion "
        "gates read): dwell times vs the transition matrix, transitions, posterior "
        "confidence, OOD rates, state-conditioned returns with spell-bootstrap intervals, "
        "and a walk-forward backtest (always in, state-gated, state-sized, after costs). "
        "Horizons, costs and thresholds: config validation.yaml.",
    )
    report.add_argument("--timeframe", required=True, type=_timeframe)
    report.add_argument("--model-id", required=True)
    report.add_argument("--symbols", nargs="+", help="default: every symbol with stored states")
    report.add_argument("--start", help="first ts (inclusive, timezone-aware)")
    report.add_argument("--end", help="last ts (exclusive, timezone-aware)")


def _add_demo(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="run everything that exists end to end on the home directory",
        description="synth -> resample -> features -> state vectors -> training (Prefect "
        "flow, Ray grid; 1d on S&P 500) -> the last day through the live engine of every "
        "timeframe -> backfill of every model into the Delta state store; prints tables "
        "read back from the database and Delta and where every output went.",
    )
    demo.add_argument("--symbols", type=int, default=6, help="synthetic symbols (default 6)")
    demo.add_argument("--days", type=int, default=70, help="trading days (default 70)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="where fan-out work runs (default ray)",
    )
