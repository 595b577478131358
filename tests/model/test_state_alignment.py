"""Hungarian label alignment on the synthetic market: after a refit on a shifted window
(encoder anchored, states matched), state ids mean what they meant before.

The alignment must find the best relabelling there is (the permutation of the refit's
states that agrees most with the old model on the shared bars); how much two fits on
different windows can agree at all is the data's and the features'. Measured with the
emission cost on market seeds 11-15 (default market, 5m), the aligned agreement was
0.913, 0.540, 0.648, 0.828, 0.802 with the VWAP and volume windows rolling (feature spec
version 1) and 0.834, 0.863, 0.976, 0.950, 0.926 with them anchored at the day (version
2, shipped); on seeds 11 and 12, the two checked, it equalled the best relabelling's.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from regimes.model.encoders.anchoring import anchor
from regimes.model.hmm.alignment import (
    align_states,
    co_occupancy_cost,
    gaussian_symmetric_kl,
    relabel,
)
from regimes.model.hmm.filtering import filter_sequences
from regimes.model.hmm.model import RegimeHMM
from regimes.model.pipeline import StateVectorPipeline
from tests.model.conftest import CONFIG

pytestmark = pytest.mark.model


def _without_seasonal(config, timeframe: str):
    from dataclasses import replace

    timeframes = dict(config.timeframes.timeframes)
    timeframes[timeframe] = timeframes[timeframe].model_copy(update={"seasonal": None})
    return replace(
        config, timeframes=config.timeframes.model_copy(update={"timeframes": timeframes})
    )


def _sequences(z: pd.DataFrame, d: int):
    z = z.sort_values(["symbol", "ts"], kind="stable")
    values = z[[f"z_{k:02d}" for k in range(d)]].to_numpy()
    lengths = z.groupby("symbol", sort=False).size().tolist()
    return z, values, lengths


@pytest.mark.parametrize("method", ["emission", "co_occupancy"])
def test_refit_on_a_shifted_window_keeps_state_ids(market_5m, method):
    frame, _ = market_5m
    axis = pd.DatetimeIndex(frame["ts"].unique()).sort_values()
    n = len(axis)
    first = frame[frame["ts"] < axis[int(0.6 * n)]]
    shifted = frame[(frame["ts"] >= axis[int(0.2 * n)]) & (frame["ts"] < axis[int(0.8 * n)])]
    shared = frame[(frame["ts"] >= axis[int(0.2 * n)]) & (frame["ts"] < axis[int(0.6 * n)])]

    # Without the seasonal adjustment, as the figures above were measured. With it (5m
    # ships it since 2026-12-04) both methods find the same mapping (the best relabelling),
    # but on seed 11 the two fits' states agree on only 0.679 of the shared bars, below
    # this test's 0.8: docs/regime_model.md, "The 5m states were the clock".
    config = _without_seasonal(CONFIG, "5m")
    old_pipe = StateVectorPipeline(config, "5m", "pca", latent_dim=6).fit(first)
    new_pipe = StateVectorPipeline(
        config, "5m", "pca", latent_dim=6, previous_selection=old_pipe.features_
    ).fit(shifted)
    old_shared, z_old_shared, _ = _sequences(old_pipe.transform(shared), 6)
    new_shared, _, _ = _sequences(new_pipe.transform(shared), 6)
    keys = old_shared[["symbol", "ts"]].merge(new_shared[["symbol", "ts"]])
    old_shared = keys.merge(old_shared)
    # Anchor the new encoder to the old one on the shared bars (not yet anchored, so its
    # transform is the unanchored z), so both HMMs live in one z space.
    columns = [f"z_{k:02d}" for k in range(6)]
    merged = keys.merge(new_shared)
    anchor(new_pipe.encoder_, merged[columns].to_numpy(), old_shared[columns].to_numpy())

    # K = 4 fast regimes in the truth; diagonal covariances.
    hmm_kwargs = dict(n_states=4, covariance_type="diag", expected_dwell=8.0, n_restarts=2)
    _, z_first, len_first = _sequences(old_pipe.transform(first), 6)
    old_hmm = RegimeHMM(random_state=1, **hmm_kwargs).fit(z_first, len_first)
    _, z_shift, len_shift = _sequences(new_pipe.transform(shifted), 6)
    new_hmm = RegimeHMM(random_state=2, **hmm_kwargs).fit(z_shift, len_shift)

    _, z_old, lengths = _sequences(old_pipe.transform(shared), 6)
    _, z_new, lengths_new = _sequences(new_pipe.transform(shared), 6)
    assert lengths == lengths_new
    old_post = np.exp(filter_sequences(z_old, lengths, old_hmm.params_)[0])
    new_post = np.exp(filter_sequences(z_new, lengths, new_hmm.params_)[0])
    if method == "emission":
        cost = gaussian_symmetric_kl(new_hmm.params_, old_hmm.params_)
    else:
        cost = co_occupancy_cost(new_post, old_post)
    report = align_states(cost, method, threshold=5.0 if method == "emission" else 0.5)
    aligned = relabel(new_hmm.params_, report.mapping)
    aligned_states = filter_sequences(z_new, lengths, aligned)[0].argmax(axis=1)
    raw_states = new_post.argmax(axis=1)
    old_states = old_post.argmax(axis=1)
    agreement = float((aligned_states == old_states).mean())
    before = float((raw_states == old_states).mean())
    best = max(
        float((np.asarray(order)[raw_states] == old_states).mean())
        for order in itertools.permutations(range(hmm_kwargs["n_states"]))
    )
    print(
        f"{method}: agreement {agreement:.3f} (unaligned {before:.3f}, best relabelling "
        f"{best:.3f}), cost {report.cost:.3f}, mapping {report.mapping}, "
        f"unstable {report.unstable}"
    )
    assert agreement == pytest.approx(best, abs=0.005)  # relabelling the filter: no worse
    assert agreement >= 0.8
    assert not report.unstable
