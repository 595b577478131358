"""The real-data check of the regime benchmark: S&P 500 daily bars (shipped with
``arch``, no download) through the 1d grid and selection; does the state-implied
volatility track the realised volatility of the next 21 days?"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from regimes.data.bars import session_open_utc
from regimes.features.batch import compute_batch
from regimes.features.selection import selected_features
from regimes.model.hmm.filtering import filter_sequences
from regimes.model.splits import walk_forward_splits
from regimes.training.grid import evaluate_cell, expand_grid, select_winner, summarize_grid

HORIZON = 21


def sp500_frame(config) -> pd.DataFrame:
    from arch.data import sp500

    raw = sp500.load()
    session = config.timeframes.session
    bars = pd.DataFrame(
        {
            "symbol": "SPX",
            "timeframe": "1d",
            "ts": session_open_utc(raw.index, session),
            "open": raw["Open"].to_numpy(),
            "high": raw["High"].to_numpy(),
            "low": raw["Low"].to_numpy(),
            "close": raw["Close"].to_numpy(),
            "volume": raw["Volume"].to_numpy(float),
            "is_gap": False,
        }
    )
    names = selected_features(config.features, config.timeframe("1d"))
    features = compute_batch(bars, config.features, session, names)
    return features.merge(bars[["symbol", "ts", "close"]], on=["symbol", "ts"])


def sp500_figures(config) -> dict:
    """Chosen K, Spearman rho (every day and after the final training window) and the
    2008 Q4 / 2017 ratio of the state-implied volatility."""
    frame = sp500_frame(config)
    folds = walk_forward_splits(frame["ts"], config.timeframes.preprocessing.splits)
    cells = expand_grid(config, "1d")
    last = folds[-1]
    results = [
        evaluate_cell(frame, fold, cell, config, "1d", 0, keep_fit=fold.index == last.index)
        for cell in cells
        for fold in folds
    ]
    winner, _ = select_winner(summarize_grid(results, len(folds)))
    pipeline, hmm = next(
        r.fitted for r in results if r.cell.key == winner["cell"] and r.fold == last.index
    )
    z = pipeline.transform(frame)
    Z = z[[f"z_{k:02d}" for k in range(pipeline.d)]].to_numpy()
    posterior = np.exp(filter_sequences(Z, [len(Z)], hmm.params_)[0])
    closes = frame.set_index("ts")["close"]
    returns = np.log(closes).diff()
    r = returns.reindex(z["ts"]).to_numpy()
    train = (z["ts"] < last.train_end).to_numpy() & np.isfinite(r)
    weights = posterior[train]
    state_vol = np.sqrt((weights * r[train, None] ** 2).sum(0) / weights.sum(0)) * np.sqrt(252)
    implied = posterior @ state_vol
    realised = (returns**2).rolling(HORIZON).mean().shift(-HORIZON).pow(0.5).reindex(
        z["ts"]
    ).to_numpy() * np.sqrt(252)
    ok = np.isfinite(realised)
    after = ok & ~train & (z["ts"] >= last.train_end).to_numpy()
    ts = pd.DatetimeIndex(z["ts"])
    q4 = implied[(ts >= "2008-10-01") & (ts < "2009-01-01")].mean()
    y2017 = implied[(ts >= "2017-01-01") & (ts < "2018-01-01")].mean()
    return {
        "K": int(winner["K"]),
        "rho_all": float(spearmanr(implied[ok], realised[ok]).statistic),
        "rho_out": float(spearmanr(implied[after], realised[after]).statistic),
        "ratio_2008_2017": float(q4 / y2017),
        "state_vol": state_vol.round(3).tolist(),
    }
