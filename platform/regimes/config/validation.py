"""Validation report settings (``validation.yaml``): horizons, costs, bootstrap, the
walk-forward backtest and the thresholds of the report's verdicts."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from regimes.config.spec import _STRICT
from regimes.timeframes import TIMEFRAMES

DEFAULT_HORIZON_BARS = {"1m": 30, "5m": 12, "15m": 8, "1h": 6, "1d": 5}
DEFAULT_COST_BPS = {"1m": 1.0, "5m": 1.0, "15m": 1.0, "1h": 2.0, "1d": 5.0}


def _per_timeframe(value: dict, what: str) -> dict:
    unknown = [name for name in value if name not in TIMEFRAMES]
    missing = [name for name in TIMEFRAMES if name not in value]
    if unknown or missing:
        raise ValueError(
            f"{what}: expected exactly the timeframes {list(TIMEFRAMES)}"
            + (f"; unknown {unknown}" if unknown else "")
            + (f"; missing {missing}" if missing else "")
        )
    return {name: value[name] for name in TIMEFRAMES}


class BootstrapConfig(BaseModel):
    """Resamples, two-sided confidence level and seed of every bootstrap interval."""

    model_config = _STRICT

    samples: int = Field(default=500, ge=50)
    confidence: float = Field(default=0.9, gt=0.5, lt=1.0)
    seed: int = Field(default=0, ge=0)


class BacktestConfig(BaseModel):
    """The walk-forward backtest: ``test_windows`` equal test windows after the first
    ``min_train_fraction`` of the history; the state-sized position is capped at
    ``size_cap`` (in units of the always-in position)."""

    model_config = _STRICT

    test_windows: int = Field(default=6, ge=1)
    min_train_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    size_cap: float = Field(default=2.0, gt=0.0)


class VerdictConfig(BaseModel):
    """Thresholds of the report's verdicts (they feed the promotion gates)."""

    model_config = _STRICT

    dwell_ratio_max: float = Field(default=2.0, gt=1.0)
    """Empirical mean dwell within this factor of 1/(1-a_ii) (either way)."""
    min_share: float = Field(default=0.10, ge=0.0, lt=1.0)
    """Dwell and diagonal verdicts look at the states holding at least this share."""
    min_diagonal: float = Field(default=0.5, gt=0.0, lt=1.0)
    """a_ii at least this for those states."""
    min_median_confidence: float = Field(default=0.6, gt=0.0, le=1.0)
    """Median of max(alpha_t) over known bars at least this."""


class ValidationConfig(BaseModel):
    """``config/validation.yaml``; every field has a default, so a config directory
    without the file gets these."""

    model_config = _STRICT

    horizon_bars: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_HORIZON_BARS))
    cost_bps: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_COST_BPS))
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    min_spells: int = Field(default=5, ge=2)
    min_bars: int = Field(default=30, ge=2)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    verdicts: VerdictConfig = Field(default_factory=VerdictConfig)

    @field_validator("horizon_bars")
    @classmethod
    def _horizons(cls, value: dict[str, int]):
        value = _per_timeframe(value, "horizon_bars")
        bad = {name: n for name, n in value.items() if n < 1}
        if bad:
            raise ValueError(f"horizon_bars: expected >= 1 bar, got {bad}")
        return value

    @field_validator("cost_bps")
    @classmethod
    def _costs(cls, value: dict[str, float]):
        value = _per_timeframe(value, "cost_bps")
        bad = {name: c for name, c in value.items() if c < 0}
        if bad:
            raise ValueError(f"cost_bps: expected >= 0, got {bad}")
        return value
