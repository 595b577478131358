"""The feature spec (``features.yaml``): the fixed 21 features, formulas, windows, stationarity."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
)

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

DAY_ANCHORABLE: tuple[str, ...] = ("vwap_60", "dist_vwap_60", "vol_z_60", "relvol_60")
"""The VWAP and volume features whose windows may reset at the market's trading-day
boundary (``anchor: market_day``)."""
ANCHORS = ("rolling", "market_day")
STATIONARITY_POLICIES = frozenset({"none", "log_ratio_to_close", "relative_to_close", "difference"})
COVARIANCE_TYPES = frozenset({"diag", "full", "tied", "spherical"})
RETRAIN_CADENCES = frozenset({"weekly", "biweekly", "monthly", "quarterly"})
LATENT_DIM_BOUNDS = (6, 16)
MAX_K = 16


def _sha256_json(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


_STRICT = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- features


class FeatureDefinition(BaseModel):
    """One feature of ``config/features.yaml``."""

    model_config = _STRICT

    formula: str = Field(min_length=1)
    inputs: list[Literal["ts", "open", "high", "low", "close", "volume"]] = Field(min_length=1)
    windows: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)
    stationarity: Literal["none", "log_ratio_to_close", "relative_to_close", "difference"]
    anchor: Literal["rolling", "market_day"] = "rolling"
    """``rolling``: the window is the last n real bars, across nights, weekends and halts.
    ``market_day`` (VWAP and volume features, intraday timeframes): the window is the last
    min(n, bars since the market's trading day began) real bars."""

    @model_serializer(mode="wrap")
    def _omit_default_anchor(self, handler):
        # A spec written before anchors existed dumps (and so fingerprints, and lands in
        # artifacts) exactly as it did: ``anchor`` appears only when it is not rolling.
        data = handler(self)
        if data.get("anchor") == "rolling":
            data.pop("anchor")
        return data


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
        anchored = [
            name
            for name, item in value.items()
            if item.anchor != "rolling" and name not in DAY_ANCHORABLE
        ]
        if anchored:
            raise ValueError(
                f"{anchored}: anchor: market_day applies to {list(DAY_ANCHORABLE)} only"
            )
        # Canonical order, whatever the file's order.
        return {name: value[name] for name in FIXED_FEATURES}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.features)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form: changes whenever any formula or window does."""
        return _sha256_json(self.model_dump(mode="json"))
