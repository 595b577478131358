"""Loading and validating config files into typed models; one-line errors naming file and field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from regimes.config.metadata import ModelMetadata
from regimes.config.spec import FeatureSpec
from regimes.config.timeframes import TimeframeConfig, TimeframesConfig
from regimes.errors import ConfigError

# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class PlatformConfig:
    """The whole configuration, loaded once from one directory."""

    features: FeatureSpec
    timeframes: TimeframesConfig
    source_dir: Path

    def timeframe(self, name: str) -> TimeframeConfig:
        return self.timeframes.timeframes[name]


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
