"""Rollout gate settings (``config/gates.yaml``): defaults plus per-timeframe overrides,
parsed once into typed models."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from regimes.config.spec import _STRICT
from regimes.timeframes import TIMEFRAMES

GATES_FILE = "gates.yaml"


class GateSettings(BaseModel):
    """The gates of one timeframe (see the comments in ``config/gates.yaml``)."""

    model_config = _STRICT

    bins: int = Field(10, ge=2, le=100)
    min_rows: int = Field(200, ge=2)
    current_bars: int = Field(1000, ge=2)
    feature_psi: float = Field(0.25, gt=0)
    feature_kl: float = Field(0.25, gt=0)
    max_drifted_share: float = Field(0.34, ge=0, le=1)
    occupancy_psi: float = Field(0.5, gt=0)
    loglik_psi: float = Field(0.5, gt=0)
    champion_occupancy_psi: float = Field(0.5, gt=0)
    shadow_min_bars: int = Field(200, ge=1)
    shadow_agreement: float = Field(0.5, ge=0, le=1)
    ood_margin: float = Field(0.05, ge=0, le=1)
    probation_bars: int = Field(500, ge=1)
    probation_min_bars: int = Field(50, ge=1)
    probation_max_ood_rate: float = Field(0.3, ge=0, le=1)
    trigger_loglik_decay: float = Field(1.0, gt=0)
    trigger_loglik_z: float = Field(3.0, gt=0)
    trigger_trailing_windows: int = Field(4, ge=2)
    trigger_entropy_quantile: float = Field(0.99, gt=0, lt=1)
    trigger_entropy_share: float = Field(0.05, gt=0, le=1)
    trigger_top_state_share: float = Field(0.9, gt=0, le=1)


class GatesConfig(BaseModel):
    """``config/gates.yaml``."""

    model_config = _STRICT

    defaults: dict = Field(default_factory=dict)
    timeframes: dict[str, dict] = Field(default_factory=dict)

    @field_validator("timeframes")
    @classmethod
    def _known(cls, value: dict):
        unknown = [tf for tf in value if tf not in TIMEFRAMES]
        if unknown:
            raise ValueError(f"unknown timeframe(s) {unknown}; expected some of {list(TIMEFRAMES)}")
        return value

    def for_timeframe(self, timeframe: str) -> GateSettings:
        return GateSettings.model_validate({**self.defaults, **self.timeframes.get(timeframe, {})})


def load_gates(config_dir: str | Path) -> GatesConfig:
    """``gates.yaml`` of ``config_dir`` (every setting checked now, per timeframe); the
    built-in defaults when the folder has none."""
    from regimes.config.loading import _read_mapping, _validate

    path = Path(config_dir) / GATES_FILE
    if not path.is_file():
        return GatesConfig()
    gates = _validate(GatesConfig, _read_mapping(path), path)
    for timeframe in TIMEFRAMES:
        _validate(
            GateSettings,
            {**gates.defaults, **gates.timeframes.get(timeframe, {})},
            f"{path}: timeframes.{timeframe}",
        )
    return gates
