"""Settings precedence: CLI option > environment variable > config file > built-in default."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from regimes.config.loading import default_config_dir
from regimes.config.metadata import metadata_json_schema

# --------------------------------------------------------------------------- settings

PROJECT_CONFIG_DIR = default_config_dir()
"""The default config shipped as package data (``config/`` of the checkout when editable)."""


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
