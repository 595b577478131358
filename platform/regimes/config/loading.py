"""Loading and validating config files into typed models; one-line errors naming file and field."""

from __future__ import annotations

import atexit
import functools
import importlib.resources
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from regimes.config.markets import MarketsConfig
from regimes.config.metadata import ModelMetadata
from regimes.config.spec import FeatureSpec
from regimes.config.timeframes import TimeframeConfig, TimeframesConfig
from regimes.config.validation import ValidationConfig
from regimes.errors import ConfigError

# --------------------------------------------------------------------------- loading

DEFAULT_CONFIG_PACKAGE = "regimes.config.defaults"
"""The package that holds the default ``config/`` (mapped in ``pyproject.toml``)."""
VALIDATION_FILE = "validation.yaml"
"""Optional: a config directory without it gets the defaults of ValidationConfig."""
MARKETS_FILE = "markets.yaml"
"""Optional: without it every symbol is in one market, the session of timeframes.yaml."""


def default_config_dir() -> Path:
    """The directory of the default config that ships with the installed package.

    The same files as ``config/`` at the repo root: an editable install resolves to that
    folder itself, a wheel install to the copy inside ``site-packages``.

    Returns
    -------
    Path
        A real directory holding ``features.yaml``, ``timeframes.yaml`` and
        ``metadata.schema.json``.

    Raises
    ------
    ConfigError
        When the installed package has no default config (an editable install made
        before the config became package data): reinstall, or name a directory.

    Examples
    --------
    >>> (default_config_dir() / "timeframes.yaml").is_file()
    True
    """
    return package_resource_dir(DEFAULT_CONFIG_PACKAGE)


@functools.cache
def package_resource_dir(package: str) -> Path:
    """The files of ``package`` as a real directory (see :func:`default_config_dir`).

    An installed package on the file system is its own directory. A package imported
    from elsewhere (a zip archive) has no directory of its own, so its top-level files
    are copied once into a temporary directory that lives as long as this process:
    ``importlib.resources.as_file`` would remove the copy as soon as its block ends,
    and callers keep the path.
    """
    try:
        resources = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise ConfigError(
            f"package {package} (the default config) is not installed: reinstall regimes "
            "(make install), or give --config-dir / REGIMES_CONFIG_DIR"
        ) from None
    if isinstance(resources, Path):
        return resources
    copy = Path(tempfile.mkdtemp(prefix=f"{package}-"))
    atexit.register(shutil.rmtree, copy, ignore_errors=True)
    for entry in resources.iterdir():
        if entry.is_file():
            (copy / entry.name).write_bytes(entry.read_bytes())
    return copy


@dataclass(frozen=True)
class PlatformConfig:
    """The whole configuration, loaded once from one directory."""

    features: FeatureSpec
    timeframes: TimeframesConfig
    source_dir: Path
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    markets: MarketsConfig = field(default_factory=MarketsConfig)

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


def load_validation(path: str | Path) -> ValidationConfig:
    """Load and validate ``validation.yaml``; the defaults when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return ValidationConfig()
    return _validate(ValidationConfig, _read_mapping(path), path)


def load_markets(path: str | Path) -> MarketsConfig:
    """Load and validate ``markets.yaml``; one default market when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return MarketsConfig()
    return _validate(MarketsConfig, _read_mapping(path), path)


def load_config(config_dir: str | Path) -> PlatformConfig:
    """Load ``features.yaml``, ``timeframes.yaml`` and (optional) ``validation.yaml`` and
    ``markets.yaml`` from ``config_dir``."""
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        raise ConfigError(f"{config_dir}: config directory not found")
    return PlatformConfig(
        features=load_feature_spec(config_dir / "features.yaml"),
        timeframes=load_timeframes(config_dir / "timeframes.yaml"),
        source_dir=config_dir,
        validation=load_validation(config_dir / VALIDATION_FILE),
        markets=load_markets(config_dir / MARKETS_FILE),
    )
