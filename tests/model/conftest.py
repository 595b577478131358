"""Model-tier fixtures: a synthetic market with known regimes, turned into features
in memory (the same functions the pipeline runs, no database)."""

from __future__ import annotations

import pandas as pd
import pytest

from regimes.config.loading import load_config
from regimes.data.bars import align_minutes, resample
from regimes.data.synth import SynthConfig, generate
from regimes.features.batch import compute_batch
from regimes.features.selection import selected_features
from tests.conftest import REPO_ROOT

CONFIG = load_config(REPO_ROOT / "config")


def feature_frame(symbols: int, days: int, seed: int, timeframe: str) -> pd.DataFrame:
    session = CONFIG.timeframes.session
    market = generate(SynthConfig(symbols=symbols, days=days, seed=seed), session)
    frames = []
    for _, group in market.bars.groupby("symbol"):
        aligned, _ = align_minutes(group, session)
        bars = resample(aligned, timeframe, session, CONFIG.timeframes.gaps.max_missing_fraction)
        names = selected_features(CONFIG.features, CONFIG.timeframe(timeframe))
        features = compute_batch(bars, CONFIG.features, session, names)
        frames.append(features.merge(bars[["symbol", "ts", "close"]], on=["symbol", "ts"]))
    return pd.concat(frames, ignore_index=True), market


@pytest.fixture(scope="session")
def market_5m():
    return feature_frame(symbols=4, days=40, seed=11, timeframe="5m")
