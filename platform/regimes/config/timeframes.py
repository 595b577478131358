"""Per-timeframe settings (``timeframes.yaml``): session, gaps, preprocessing, K and d
ranges, anti-chatter, OOD, state TTL."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    field_validator,
    model_validator,
)

from regimes.config.spec import (
    _STRICT,
    COVARIANCE_TYPES,
    FIXED_FEATURES,
    LATENT_DIM_BOUNDS,
    MAX_K,
    RETRAIN_CADENCES,
)
from regimes.timeframes import TIMEFRAME_DURATION, TIMEFRAMES, parse_duration

# ------------------------------------------------------------------------- timeframes

SEASONAL_OFF = "none"


class SeasonalConfig(BaseModel):
    """Seasonal adjustment of one timeframe's scaled features
    (:class:`regimes.model.seasonal.SeasonalAdjuster`): each feature standardised per
    time-of-day bucket of ``bucket_minutes`` from the trading day's open, fitted on the
    training rows. ``seasonal: none`` in the YAML turns it off."""

    model_config = _STRICT

    bucket_minutes: int = Field(ge=1, le=1440)
    min_bucket_rows: int = Field(default=150, ge=2)


class AntiChatter(BaseModel):
    """Anti-chatter defaults of one timeframe (plan task 6.4)."""

    model_config = _STRICT

    p_switch: float = Field(gt=0.5, le=1.0)
    min_dwell_bars: int = Field(ge=1)
    majority_window: int = Field(ge=1)


class OODConfig(BaseModel):
    """Live out-of-distribution and model-health checks of one timeframe (plan 6.5).

    The log-likelihood threshold itself is calibrated at training and stored in each
    artifact's metadata (``ood_threshold``); these are the trailing-window settings.
    """

    model_config = _STRICT

    window: int = Field(default=100, ge=5)
    entropy_z: float = Field(default=4.0, gt=0)
    collapse_share: float = Field(default=0.95, gt=0.5, le=1.0)
    max_clipped_features: int = Field(default=0, ge=0)


class Session(BaseModel):
    """Trading hours in a time zone that bars are aligned to.

    ``open`` and ``close`` are wall-clock times in ``timezone`` (daylight saving is
    handled: a New York session opens at 14:30 UTC in winter and 13:30 UTC in summer).
    """

    model_config = _STRICT

    open: time
    close: time
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(min_length=1)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; expected an IANA name such as "
                "America/New_York or UTC"
            ) from None
        return value

    @model_validator(mode="after")
    def _open_before_close(self):
        if self.close <= self.open:
            raise ValueError(
                f"session close {self.close} must be after open {self.open} (same local day)"
            )
        if (self.open.second, self.close.second) != (0, 0):
            raise ValueError("session open and close must be whole minutes")
        return self

    @property
    def open_offset(self) -> timedelta:
        return timedelta(hours=self.open.hour, minutes=self.open.minute)

    @property
    def length(self) -> timedelta:
        return timedelta(
            hours=self.close.hour - self.open.hour, minutes=self.close.minute - self.open.minute
        )

    @property
    def minutes(self) -> int:
        return int(self.length.total_seconds() // 60)

    @property
    def open_minute(self) -> int:
        """Minutes from local midnight to the open."""
        return self.open.hour * 60 + self.open.minute


class TimeframeConfig(BaseModel):
    """Model settings of one timeframe in ``config/timeframes.yaml``."""

    model_config = _STRICT

    k_range: tuple[int, int]
    latent_dim_range: tuple[int, int]
    covariance_types: list[str] = Field(min_length=1)
    feature_budget: int = Field(ge=1, le=len(FIXED_FEATURES))
    features: Literal["all"] | list[str] = "all"
    retrain_cadence: str
    state_ttl: timedelta
    anti_chatter: AntiChatter
    ood: OODConfig = Field(default_factory=OODConfig)
    # Absent (models trained before it existed) or ``none``: no seasonal adjustment.
    seasonal: SeasonalConfig | None = None

    @field_validator("seasonal", mode="before")
    @classmethod
    def _seasonal(cls, value):
        if value is None or value == SEASONAL_OFF:
            return None
        if isinstance(value, str):
            raise ValueError(
                f"expected {SEASONAL_OFF!r} or a mapping such as {{bucket_minutes: 30}}, "
                f"got {value!r}"
            )
        return value

    @field_validator("k_range")
    @classmethod
    def _k_range(cls, value: tuple[int, int]):
        low, high = value
        if not 2 <= low <= high <= MAX_K:
            raise ValueError(f"expected 2 <= min <= max <= {MAX_K}, got {list(value)}")
        return value

    @field_validator("latent_dim_range")
    @classmethod
    def _latent_dim_range(cls, value: tuple[int, int]):
        low, high = value
        lo_bound, hi_bound = LATENT_DIM_BOUNDS
        if not lo_bound <= low <= high <= hi_bound:
            raise ValueError(f"expected {lo_bound} <= min <= max <= {hi_bound}, got {list(value)}")
        return value

    @field_validator("covariance_types")
    @classmethod
    def _covariance_types(cls, value: list[str]):
        bad = [item for item in value if item not in COVARIANCE_TYPES]
        if bad:
            raise ValueError(
                f"unknown covariance type(s) {bad}; expected {sorted(COVARIANCE_TYPES)}"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate covariance types in {value}")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value):
        if value == "all":
            return value
        unknown = [name for name in value if name not in FIXED_FEATURES]
        if unknown:
            raise ValueError(
                f"unknown feature(s) {unknown}; a timeframe may only down-select from the "
                f"fixed set {list(FIXED_FEATURES)}"
            )
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate feature names in {value}")
        if not value:
            raise ValueError("an empty feature list; use 'all' or name at least one feature")
        return value

    @field_validator("retrain_cadence")
    @classmethod
    def _cadence(cls, value: str):
        if value not in RETRAIN_CADENCES:
            raise ValueError(f"expected one of {sorted(RETRAIN_CADENCES)}, got {value!r}")
        return value

    @field_validator("state_ttl", mode="before")
    @classmethod
    def _ttl(cls, value):
        if isinstance(value, timedelta):
            return value
        return parse_duration(value)

    @model_validator(mode="after")
    def _budget_within_selection(self):
        selected = self.selected_features
        if self.feature_budget > len(selected):
            raise ValueError(
                f"feature_budget {self.feature_budget} exceeds the {len(selected)} selected "
                f"feature(s); expected feature_budget <= {len(selected)}"
            )
        return self

    @property
    def selected_features(self) -> tuple[str, ...]:
        """The down-selected features in canonical order (before automated pruning)."""
        if self.features == "all":
            return FIXED_FEATURES
        chosen = set(self.features)
        return tuple(name for name in FIXED_FEATURES if name in chosen)


class GapPolicy(BaseModel):
    """When a resampled bar counts as a gap (``docs/data.md``)."""

    model_config = _STRICT

    max_missing_fraction: float = Field(ge=0.0, lt=1.0)
    """A higher-timeframe bar missing more than this fraction of its minutes is a gap."""


class ScalerConfig(BaseModel):
    """Robust scaling then Yeo-Johnson (plan 2.4)."""

    model_config = _STRICT

    quantile_range: tuple[float, float] = (25.0, 75.0)
    clip: float = Field(default=5.0, gt=0)
    """After the power transform, values are clipped to [-clip, clip] (extremes)."""

    @field_validator("quantile_range")
    @classmethod
    def _quantiles(cls, value: tuple[float, float]):
        low, high = value
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"expected 0 <= low < high <= 100, got {list(value)}")
        return value


class SelectionConfig(BaseModel):
    """Constrained feature selection within the fixed list (plan 2.7, 2.8)."""

    model_config = _STRICT

    max_abs_correlation: float = Field(default=0.95, gt=0.0, le=1.0)
    """Of a pair with |rho| above this, one is dropped."""
    stability_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    """Scores within this of each other count as close: the previous selection wins."""


class SplitConfig(BaseModel):
    """Walk-forward splits (plan 2.5) on the time axis shared by all symbols.

    Fold 0 trains on the first ``train_fraction`` of the distinct timestamps; each later
    fold's training window ends one validation window later (``expanding`` keeps the
    start, ``rolling`` moves it). Each fold: train | embargo | validation | embargo | test.
    """

    model_config = _STRICT

    mode: Literal["expanding", "rolling"] = "expanding"
    folds: int = Field(default=3, ge=1)
    train_fraction: float = Field(default=0.45, gt=0.0, lt=1.0)
    validation_fraction: float = Field(default=0.12, gt=0.0, lt=1.0)
    test_fraction: float = Field(default=0.08, ge=0.0, lt=1.0)
    embargo_bars: int = Field(default=20, ge=0)
    """Bars left out at each boundary, at least the encoder's window length, so a
    validation window never shares bars with a training window."""

    @model_validator(mode="after")
    def _fits(self):
        total = self.train_fraction + self.folds * self.validation_fraction + self.test_fraction
        if total > 1.0:
            raise ValueError(
                f"train_fraction + folds x validation_fraction + test_fraction = {total:.3f} "
                "exceeds 1: the last fold would run past the end of the history"
            )
        return self


class PreprocessingConfig(BaseModel):
    model_config = _STRICT

    scaler: ScalerConfig = Field(default_factory=ScalerConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    splits: SplitConfig = Field(default_factory=SplitConfig)


class TimeframesConfig(BaseModel):
    """``config/timeframes.yaml``: the session, the gap policy, preprocessing settings
    and one :class:`TimeframeConfig` per timeframe."""

    model_config = _STRICT

    session: Session | None
    gaps: GapPolicy
    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    timeframes: dict[str, TimeframeConfig]

    @field_validator("timeframes")
    @classmethod
    def _all_timeframes(cls, value: dict[str, TimeframeConfig]):
        unknown = [name for name in value if name not in TIMEFRAMES]
        missing = [name for name in TIMEFRAMES if name not in value]
        if unknown or missing:
            raise ValueError(
                f"expected exactly the timeframes {list(TIMEFRAMES)}"
                + (f"; unknown {unknown}" if unknown else "")
                + (f"; missing {missing}" if missing else "")
            )
        for name, config in value.items():
            _check_seasonal(name, config.seasonal)
        return {name: value[name] for name in TIMEFRAMES}


def _check_seasonal(timeframe: str, seasonal: SeasonalConfig | None) -> None:
    """Buckets hold whole bars of the timeframe; a 1d bar is a whole day (no buckets)."""
    if seasonal is None:
        return
    field = f"timeframes.{timeframe}.seasonal"
    if timeframe == "1d":
        raise ValueError(
            f"{field}: a 1d bar is a whole trading day, so there is no time of day to "
            f"adjust for; expected {SEASONAL_OFF!r}"
        )
    bar = int(TIMEFRAME_DURATION[timeframe].total_seconds() // 60)
    if seasonal.bucket_minutes % bar:
        raise ValueError(
            f"{field}.bucket_minutes: expected a whole number of {timeframe} bars "
            f"(a multiple of {bar}), got {seasonal.bucket_minutes}"
        )
