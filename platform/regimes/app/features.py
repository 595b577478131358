"""Use cases over stored bars: ``features`` (the feature store) and ``encode`` (the
state-vector pipeline fitted on each timeframe's first walk-forward fold)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from regimes.app.executors import Executor
from regimes.app.output import format_table, one_line
from regimes.app.progress import Notify, Progress, no_progress, silent
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError
from regimes.timeframes import TIMEFRAMES


@dataclass(frozen=True)
class FeaturesRequest:
    """Which (symbol, timeframe) units to compute (None: every stored one)."""

    timeframes: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FeaturesResult:
    executor: str
    results: list  # regimes.features.store.FeatureUnitResult, one per unit
    feature_spec_version: int
    seconds: float

    @property
    def failed(self) -> list:
        """The units that failed (the others' rows are kept)."""
        return [r for r in self.results if r.error]

    def table(self):
        from regimes.features.store import summarize

        return summarize(self.results)

    def summary(self) -> list[str]:
        lines = [
            f"features: spec version {self.feature_spec_version}, {self.seconds:.1f}s",
            format_table(self.table()),
        ]
        lines += [f"  FAILED {r.symbol} {r.timeframe}: {r.error}" for r in self.failed]
        return lines

    def as_dict(self) -> dict[str, Any]:
        table = self.table()
        return {
            "command": "features",
            "executor": self.executor,
            "units": len(self.results),
            "failed": [
                {"symbol": r.symbol, "timeframe": r.timeframe, "error": r.error}
                for r in self.failed
            ],
            "rows_written": {row.timeframe: int(row.rows_written) for row in table.itertuples()},
            "feature_spec_version": self.feature_spec_version,
            "seconds": round(self.seconds, 3),
        }


def features(
    workspace: Workspace,
    request: FeaturesRequest,
    executor: Executor,
    notify: Notify = silent,
    progress: Progress = no_progress,
) -> FeaturesResult:
    """Compute and store the features of every requested unit on ``executor``; a failed
    unit is a field of the result, not an exception."""
    from regimes.features.store import plan_units

    started = time.perf_counter()
    units = plan_units(
        workspace.engine,
        list(request.timeframes) if request.timeframes else None,
        list(request.symbols) if request.symbols else None,
    )
    notify(f"features: {len(units)} (symbol, timeframe) units {executor.describe()}")
    results = executor.run_features(workspace, units, progress)
    return FeaturesResult(
        executor=executor.name,
        results=results,
        feature_spec_version=workspace.config.features.version,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class EncodeRequest:
    timeframes: tuple[str, ...] | None = None
    encoder: str = "pca"


@dataclass(frozen=True)
class EncodeResult:
    encoder: str
    timeframes: dict[str, dict] = field(default_factory=dict)
    not_fitted: dict[str, str] = field(default_factory=dict)

    def summary(self) -> list[str]:
        import pandas as pd

        lines = []
        if self.timeframes:
            lines.append(
                "state vectors fitted on each timeframe's first walk-forward training window "
                "(leakage guard passed for every stage):"
            )
            lines.append(format_table(pd.DataFrame([_encode_row(tf, r) for tf, r in self.fitted])))
        for timeframe, report in self.fitted:
            dropped = ", ".join(f"{d['feature']} ({d['reason']})" for d in report["dropped"])
            lines.append(f"  {timeframe} selected: {', '.join(report['selected'])}")
            if dropped:
                lines.append(f"  {timeframe} dropped:  {dropped}")
            if "latent_dim_plot" in report:
                lines.append(f"  {timeframe} latent-dimension curve: {report['latent_dim_plot']}")
        lines += [f"  {tf}: not fitted: {reason}" for tf, reason in self.not_fitted.items()]
        return lines

    @property
    def fitted(self) -> list[tuple[str, dict]]:
        return list(self.timeframes.items())

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "encode",
            "encoder": self.encoder,
            "timeframes": self.timeframes,
            "not_fitted": self.not_fitted,
        }


def _encode_row(timeframe: str, report: dict) -> dict:
    variance = report["explained_variance"]
    return {
        "timeframe": timeframe,
        "encoder": report["encoder"],
        "d": report["d"],
        "L": report["window_length"],
        "explained_var": None if variance is None else round(variance, 3),
        "features": len(report["selected"]),
        "dropped": len(report["dropped"]),
        "train_windows": report["train_windows"],
        "val_encoded": report["validation_encoded"],
    }


def encode(workspace: Workspace, request: EncodeRequest) -> EncodeResult:
    """Fit selection, scaling and the encoder on each timeframe's first fold; curves go
    to ``<reports>/state_vectors/``. A timeframe that cannot be fitted is reported in
    ``not_fitted``; none fitted at all is an error."""
    from regimes.model.pipeline import fit_first_fold

    reports_dir = workspace.reports_dir / "state_vectors"
    result = EncodeResult(encoder=request.encoder)
    for timeframe in request.timeframes or TIMEFRAMES:
        try:
            _, _, report = fit_first_fold(
                workspace.engine,
                workspace.config,
                timeframe,
                request.encoder,
                reports_dir=reports_dir,
            )
        except BadInputError as exc:
            result.not_fitted[timeframe] = one_line(exc)
            continue
        result.timeframes[timeframe] = report
    if not result.timeframes:
        raise BadInputError(
            "encode: no timeframe could be fitted: "
            + "; ".join(f"{tf}: {r}" for tf, r in result.not_fitted.items())
        )
    return result
