"""Typed configuration: the feature spec, per-timeframe model settings, artifact metadata.

Every YAML or JSON file is parsed once into the pydantic models below; the same models
travel as Prefect flow parameters and Serve app-builder arguments. A bad file fails
with a :class:`~regimes.errors.ConfigError` that names the file, the field and what was
expected.

Settings precedence (written down once, here): **CLI option > environment variable >
config file > built-in default**.

=============  ===================  =========================  ==========================
setting        CLI option           environment                default
=============  ===================  =========================  ==========================
home           ``--home``           ``REGIMES_HOME``           current directory
database URL   ``--db-url``         ``REGIMES_DB_URL``         ``sqlite:///<home>/regimes.db``
config dir     ``--config-dir``     ``REGIMES_CONFIG_DIR``     ``<home>/config`` if present,
                                                               else the project's ``config/``
=============  ===================  =========================  ==========================
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from regimes.errors import ConfigError
from regimes.timeframes import TIMEFRAMES, format_duration, parse_duration

FIXED_FEATURES: tuple[str, ...] = (
    "clv",
    "pullback_depth",
    "r5",
    "r15",
    "r60",
    "vwap_60",
    "dist_vwap_60",
    "tod_sin",
    "macd",
    "stoch_k",
    "sma_20",
    "ema_20",
    "vol_of_vol",
    "vol_z_60",
    "range_1",
    "rv_15",
    "rv_60",
    "relvol_60",
    "range_z_60",
    "bb_middle",
    "bb_width",
)
"""The plan's fixed 21-feature set, in canonical column order."""

STATIONARITY_POLICIES = frozenset({"none", "log_ratio_to_close", "relative_to_close", "difference"})
COVARIANCE_TYPES = frozenset({"diag", "full", "tied", "spherical"})
RETRAIN_CADENCES = frozenset({"weekly", "biweekly", "monthly", "quarterly"})
LATENT_DIM_BOUNDS = (6, 16)
MAX_K = 16

_STRICT = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- features


class FeatureDefinition(BaseModel):
    """One feature of ``config/features.yaml``."""

    model_config = _STRICT

    formula: str = Field(min_length=1)
    inputs: list[Literal["ts", "open", "high", "low", "close", "volume"]] = Field(min_length=1)
    windows: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)
    stationarity: Literal["none", "log_ratio_to_close", "relative_to_close", "difference"]


class FeatureSpec(BaseModel):
    """``config/features.yaml``: the fixed feature set with formulas and stationarity."""

    model_config = _STRICT

    version: int = Field(gt=0)
    features: dict[str, FeatureDefinition]

    @field_validator("features")
    @classmethod
    def _exactly_the_fixed_set(cls, value: dict[str, FeatureDefinition]):
        unknown = [name for name in value if name not in FIXED_FEATURES]
        missing = [name for name in FIXED_FEATURES if name not in value]
        problems = []
        if unknown:
            problems.append(f"unknown feature(s) {unknown}")
        if missing:
            problems.append(f"missing feature(s) {missing}")
        if problems:
            raise ValueError(
                "; ".join(problems) + f"; expected exactly the fixed set {list(FIXED_FEATURES)}"
            )
        # Canonical order, whatever the file's order.
        return {name: value[name] for name in FIXED_FEATURES}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.features)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form: changes whenever any formula or window does."""
        return _sha256_json(self.model_dump(mode="json"))


# ------------------------------------------------------------------------- timeframes


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
        return {name: value[name] for name in TIMEFRAMES}


# --------------------------------------------------------------------------- metadata


class TrainingWindow(BaseModel):
    model_config = _STRICT

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered_utc(self):
        for name in ("start", "end"):
            stamp = getattr(self, name)
            if stamp.tzinfo is None or stamp.utcoffset() != timedelta(0):
                raise ValueError(f"{name} must be a UTC timestamp, got {stamp.isoformat()}")
        if self.end <= self.start:
            raise ValueError(
                f"end {self.end.isoformat()} must be after start {self.start.isoformat()}"
            )
        return self


class VersionInfo(BaseModel):
    model_config = _STRICT

    regimes: str
    python: str
    packages: dict[str, str] = Field(default_factory=dict)
    git_revision: str | None = None
    feature_spec_version: int = Field(gt=0)
    feature_spec_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelMetadata(BaseModel):
    """Schema of ``metadata.json`` in every model artifact (plan task 1.3).

    ``config/metadata.schema.json`` is this model's JSON Schema, kept in sync by a test.
    """

    model_config = _STRICT

    schema_version: Literal[1] = 1
    model_id: str
    timeframe: Literal["1m", "5m", "15m", "1h", "1d"]
    created_at: datetime
    training_window: TrainingWindow
    K: int = Field(ge=2, le=MAX_K)
    d: int = Field(ge=LATENT_DIM_BOUNDS[0], le=LATENT_DIM_BOUNDS[1])
    covariance_type: str
    encoder: str
    universe: list[str] = Field(min_length=1)
    feature_names: list[str] = Field(min_length=1)
    versions: VersionInfo
    seed: int
    state_ttl: timedelta
    metrics: dict[str, Any] = Field(default_factory=dict)
    ood_threshold: float | None = None
    anti_chatter: AntiChatter
    state_labels: dict[int, str] = Field(default_factory=dict)
    files: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        description="sha256 of every file of the artifact, by file name"
    )

    @field_validator("state_ttl", mode="before")
    @classmethod
    def _ttl(cls, value):
        if isinstance(value, timedelta):
            return value
        if isinstance(value, int | float):
            return timedelta(seconds=value)
        return parse_duration(value)

    @field_validator("feature_names")
    @classmethod
    def _features(cls, value: list[str]):
        unknown = [name for name in value if name not in FIXED_FEATURES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; expected names from the fixed set")
        return value

    @field_validator("covariance_type")
    @classmethod
    def _covariance(cls, value: str):
        if value not in COVARIANCE_TYPES:
            raise ValueError(f"expected one of {sorted(COVARIANCE_TYPES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _labels_within_k(self):
        bad = [state for state in self.state_labels if not 0 <= state < self.K]
        if bad:
            raise ValueError(f"state_labels has state ids {bad} outside 0..K-1 (K={self.K})")
        return self

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["state_ttl"] = format_duration(self.state_ttl)
        return json.dumps(data, indent=2, sort_keys=True)


def metadata_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``metadata.json``."""
    return ModelMetadata.model_json_schema()


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class PlatformConfig:
    """The whole configuration, loaded once from one directory."""

    features: FeatureSpec
    timeframes: TimeframesConfig
    source_dir: Path

    def timeframe(self, name: str) -> TimeframeConfig:
        return self.timeframes.timeframes[name]


def _sha256_json(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem: ``file: field.path: what was expected (got value)``."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{source}: {where}: {message}{shown}")
    return "\n".join(lines)


def _read_mapping(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}:{where}: not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _validate(model: type[BaseModel], data: Any, source: Path | str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(source), exc)) from None


def load_feature_spec(path: str | Path) -> FeatureSpec:
    """Load and validate ``features.yaml``."""
    path = Path(path)
    return _validate(FeatureSpec, _read_mapping(path), path)


def load_timeframes(path: str | Path) -> TimeframesConfig:
    """Load and validate ``timeframes.yaml``."""
    path = Path(path)
    return _validate(TimeframesConfig, _read_mapping(path), path)


def load_metadata(path: str | Path) -> ModelMetadata:
    """Load and validate an artifact's ``metadata.json``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: metadata file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    return _validate(ModelMetadata, data, path)


def load_config(config_dir: str | Path) -> PlatformConfig:
    """Load ``features.yaml`` and ``timeframes.yaml`` from ``config_dir``."""
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        raise ConfigError(f"{config_dir}: config directory not found")
    return PlatformConfig(
        features=load_feature_spec(config_dir / "features.yaml"),
        timeframes=load_timeframes(config_dir / "timeframes.yaml"),
        source_dir=config_dir,
    )


# --------------------------------------------------------------------------- settings

PROJECT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
"""``config/`` of the source tree this package was installed from (editable install)."""


@dataclass(frozen=True)
class Settings:
    """Where the platform keeps things; resolved by :func:`resolve_settings`."""

    home: Path
    db_url: str
    config_dir: Path

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def states_dir(self) -> Path:
        return self.home / "states"

    @property
    def synth_dir(self) -> Path:
        return self.home / "synth"


def resolve_settings(
    home: str | Path | None = None,
    db_url: str | None = None,
    config_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings with the precedence CLI > environment > file > default.

    Arguments are the CLI values (``None`` when not given); ``environ`` defaults to
    ``os.environ``. Nothing is created on disk.
    """
    env = os.environ if environ is None else environ
    resolved_home = Path(home or env.get("REGIMES_HOME") or Path.cwd()).expanduser().resolve()
    resolved_db = db_url or env.get("REGIMES_DB_URL") or f"sqlite:///{resolved_home / 'regimes.db'}"
    explicit_config = config_dir or env.get("REGIMES_CONFIG_DIR")
    if explicit_config:
        resolved_config = Path(explicit_config).expanduser().resolve()
    elif (resolved_home / "config" / "timeframes.yaml").is_file():
        resolved_config = resolved_home / "config"
    else:
        resolved_config = PROJECT_CONFIG_DIR
    return Settings(home=resolved_home, db_url=resolved_db, config_dir=resolved_config)


if __name__ == "__main__":  # python -m regimes.config > config/metadata.schema.json
    print(json.dumps(metadata_json_schema(), indent=2, sort_keys=True))
