"""The typed ``metadata.json`` of a model artifact."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    field_validator,
    model_validator,
)

from regimes.config.spec import _STRICT, COVARIANCE_TYPES, FIXED_FEATURES, LATENT_DIM_BOUNDS, MAX_K
from regimes.config.timeframes import AntiChatter
from regimes.timeframes import format_duration, parse_duration

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
    format_version: int = Field(
        ge=1, description="layout of the artifact directory (regimes.model.loaded.FORMAT_VERSION)"
    )
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


if __name__ == "__main__":  # python -m regimes.config.metadata > config/metadata.schema.json
    import json as _json

    print(_json.dumps(metadata_json_schema(), indent=2, sort_keys=True))
