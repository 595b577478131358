"""Settings of the live service (``config/serve.yaml``), parsed once into a typed model
that is also the Serve app builder's argument."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from regimes.config.spec import _STRICT
from regimes.timeframes import TIMEFRAMES

SERVE_FILE = "serve.yaml"


class ServeConfig(BaseModel):
    """``config/serve.yaml`` (see the comments in that file)."""

    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    shards: dict[str, int] = Field(default_factory=lambda: {tf: 1 for tf in TIMEFRAMES})
    max_symbols_per_request: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(8_000_000, ge=1024)
    read_auth: bool = False
    flush_interval_s: float = Field(1.0, gt=0)
    store_interval_s: float = Field(30.0, gt=0)
    writer_nice: int = Field(10, ge=0, le=19)
    checkpoint_interval_s: float = Field(30.0, gt=0)
    registry_poll_s: float = Field(10.0, gt=0)
    compare_rows: int = Field(50_000, ge=0)
    shadow_idle_s: float = Field(0.01, ge=0)

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: dict[str, int]):
        unknown = [tf for tf in value if tf not in TIMEFRAMES]
        if unknown:
            raise ValueError(f"unknown timeframe(s) {unknown}; expected some of {list(TIMEFRAMES)}")
        bad = {tf: n for tf, n in value.items() if not isinstance(n, int) or not 1 <= n <= 64}
        if bad:
            raise ValueError(f"shards per timeframe must be 1..64, got {bad}")
        return {tf: value.get(tf, 1) for tf in TIMEFRAMES}


def load_serve_config(config_dir: str | Path) -> ServeConfig:
    """``serve.yaml`` of ``config_dir``; the defaults when the folder has none."""
    from regimes.config.loading import _read_mapping, _validate

    path = Path(config_dir) / SERVE_FILE
    if not path.is_file():
        return ServeConfig()
    return _validate(ServeConfig, _read_mapping(path), path)
