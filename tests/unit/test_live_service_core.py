"""The live service's core pieces, without Ray: symbol sharding, the bar journal, the
landing, champion-vs-shadow comparison, request/answer conversion and API keys."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest
from pydantic import ValidationError

from regimes.answers import UNKNOWN
from regimes.errors import BadInputError, ConfigError
from regimes.live.api import (
    BarsRequest,
    answer_columns,
    answer_records,
    bars_frame,
    parse_bars,
    parse_columns,
    validation_message,
)
from regimes.live.api_keys import check_authorization, key_digests, load_api_keys
from regimes.live.journal import BarJournal, read_journals, remove_journals
from regimes.live.landing import Landing, LandingWriter
from regimes.live.shadow import AnswerWindow, align_states, compare_answers
from regimes.live.sharding import shard_of, shards_of

pytestmark = pytest.mark.unit


def test_shards_are_stable_spread_and_checked():
    names = [f"SYM{i:04d}" for i in range(2000)]
    shards = shards_of(names, 4)
    assert shards.tolist() == [shard_of(n, 4) for n in names]
    counts = np.bincount(shards, minlength=4)
    assert counts.min() > 400  # close to 500 each
    # A value fixed by the algorithm (BLAKE2b-64 of the UTF-8 name), not by the process.
    assert (
        shard_of("SPY", 1000)
        == int.from_bytes(__import__("hashlib").blake2b(b"SPY", digest_size=8).digest(), "big")
        % 1000
    )
    with pytest.raises(BadInputError, match="shards"):
        shard_of("SPY", 0)


def _bars(ts: str, symbols, price: float = 100.0) -> pd.DataFrame:
    n = len(symbols)
    return pd.DataFrame(
        {
            "symbol": list(symbols),
            "ts": pd.DatetimeIndex([pd.Timestamp(ts, tz="UTC")] * n),
            "open": np.full(n, price),
            "high": np.full(n, price + 1),
            "low": np.full(n, price - 1),
            "close": np.full(n, price + 0.5),
            "volume": np.full(n, 1000.0),
            "is_gap": np.zeros(n, dtype=bool),
        }
    )


def test_journal_round_trip_rotation_and_a_torn_tail(tmp_path):
    journal = BarJournal(tmp_path, 1)
    journal.append(_bars("2024-01-02T14:30Z", ["A", "B"]))
    journal.append(_bars("2024-01-02T14:31Z", ["A"]))
    assert journal.rotate() == 2
    journal.append(_bars("2024-01-02T14:32Z", ["B"]))
    journal.close()
    frame = read_journals(tmp_path, 1)
    assert frame["symbol"].tolist() == ["A", "B", "A", "B"]
    assert frame["ts"].dt.tz is not None
    assert len(read_journals(tmp_path, 2)) == 1
    # A process killed while writing leaves a torn last batch: the batches before it
    # are read, the torn one is dropped.
    path = tmp_path / "journal-00000002.arrow"
    path.write_bytes(path.read_bytes()[:-40])
    assert read_journals(tmp_path, 1)["symbol"].tolist() == ["A", "B", "A"]
    remove_journals(tmp_path, 2)
    assert read_journals(tmp_path, 0)["symbol"].tolist() == []


def test_the_landing_hands_everything_over_once_and_keeps_what_failed(tmp_path):
    from regimes.data import sql as db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    db.create_schema(engine)
    landing = Landing(tmp_path / "landing")
    bars = _bars("2024-01-02T14:30Z", ["A", "B"]).assign(timeframe="1m", is_gap=False)
    landing.land_bars(bars)
    landing.land_bars(bars.assign(close=100.25))  # landed twice (a replay): newest kept
    landing.land_answers(_answers("m1", [0, 1], K=2))
    landing.land_answers(_answers("m2", [1, 1, 0], K=3))
    (tmp_path / "landing" / "bars-0000000009.arrow.partial").write_bytes(b"torn")
    assert landing.backlog() == {"bars": 2, "answers": 2, "published": 0}
    assert len(landing.bars()) == 4  # cold starts see landed bars not in the database
    published, stored, failing = [], [], {"m2"}

    class Sink:
        def write_bars(self, frame):
            return db.upsert_bars(engine, frame)

        def publish(self, frame):
            published.append(frame)

        def store_answers(self, frame, d, K):
            model_id = frame["model_id"].iloc[0]
            if model_id in failing:
                failing.discard(model_id)
                raise OSError("the store is away")  # this MERGE fails: its file stays
            stored.append((model_id, len(frame), d, K))
            return len(frame)

    writer = LandingWriter({"1m": [landing]}, {"1m": Sink()}, rows=1000)
    assert writer.publish() == 2 + 2 + 3
    assert db.read_bars(engine, "1m")["close"].tolist() == [100.25, 100.25]
    assert [f["model_id"].iloc[0] for f in published] == ["m1", "m2"]
    assert landing.backlog() == {"bars": 0, "answers": 0, "published": 2}
    with pytest.raises(OSError):
        writer.store()
    assert landing.backlog()["published"] == 1  # m1's MERGE committed, m2's did not
    assert writer.store() == 3
    assert stored == [("m1", 2, 0, 2), ("m2", 3, 0, 3)]
    assert landing.backlog() == {"bars": 0, "answers": 0, "published": 0}
    # A new shard process numbers its files after everything still landed.
    landing.land_answers(_answers("m1", [0], K=2))
    later = Landing(tmp_path / "landing")
    later.clear_partials()
    later.land_answers(_answers("m1", [1], K=2))
    names = sorted(p.name for p in (tmp_path / "landing").iterdir())
    assert names == ["answers-0000000004-m1.arrow", "answers-0000000005-m1.arrow"]


def _answers(model_id, states, K, symbol="A", start="2024-01-02T14:30Z", reasons=None):
    n = len(states)
    posterior = np.zeros((n, K))
    for i, s in enumerate(states):
        if s >= 0:
            posterior[i, s] = 1.0
        else:
            posterior[i] = np.nan
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "ts": pd.date_range(start, periods=n, freq="1min", tz="UTC"),
            "timeframe": "1m",
            "model_id": model_id,
            "state_id": states,
            "is_unknown": [s == UNKNOWN for s in states],
            "ood_reason": reasons or [None if s >= 0 else "warming up" for s in states],
            "state_prob": np.nanmax(np.where(np.isnan(posterior), -1, posterior), axis=1),
        }
    )
    for k in range(K):
        frame[f"p_{k:02d}"] = posterior[:, k]
    return frame


def test_the_answer_backlog_stays_bounded_and_feeds_what_it_would_have_fed():
    from datetime import timedelta

    from regimes.live.gateway import AnswerBacklog, feed
    from regimes.live.sync import TimeframeSynchronizer

    frames = [
        _answers("c", [i % 2, 1, 0][: 1 + i % 3], K=2, symbol=s, start=f"2024-01-02T14:{30 + i}Z")
        for i in range(12)
        for s in ("A", "B")
    ]
    folded, direct = AnswerBacklog(limit=5), []
    for frame in frames:
        folded.add(frame)
        direct.append(frame)
        assert len(folded.frames) <= 6
    syncs = []
    for kept in (folded.frames, direct):
        sync = TimeframeSynchronizer({})
        sync.set_champion("1m", "c", ttl=timedelta(hours=1))
        feed(sync, kept, "c")
        assert kept == []
        syncs.append(sync.composite(["A", "B"], pd.Timestamp("2024-01-02T14:50Z")))
    pd.testing.assert_frame_equal(syncs[0], syncs[1])


def test_comparison_aligns_labels_before_it_scores():
    champion = _answers("c", [0, 0, 1, 1, 2, 2, -1], K=3)
    # The same regimes under other labels (0->2, 1->0, 2->1), one bar apart at the end.
    shadow = _answers("s", [2, 2, 0, 0, 1, 0, 1], K=3)
    figures = compare_answers(champion, shadow)
    assert figures["bars_compared"] == 7
    assert figures["both_known"] == 6
    assert figures["agreement"] == pytest.approx(5 / 6)
    assert figures["state_map"] == {"0": 1, "1": 2, "2": 0}
    # Posterior distance: 0 on the 5 agreeing bars, 1 on the one that differs.
    assert figures["mean_abs_posterior_diff"] == pytest.approx(1 / 6)
    assert figures["switches"] == {"champion": 2, "shadow": 4}
    assert figures["ood_rate"] == {"champion": 0.0, "shadow": 0.0}


def test_comparison_with_more_shadow_states_and_ood_rates():
    champion = _answers("c", [0, 0, 1, 1], K=2)
    shadow = _answers("s", [0, 2, 1, 1], K=3)
    figures = compare_answers(champion, shadow)
    # Shadow state 2 is left unmatched: a disagreement, its mass counted in full.
    assert figures["agreement"] == pytest.approx(3 / 4)
    assert figures["mean_abs_posterior_diff"] == pytest.approx(1 / 4)
    reasons = [None, "loglik", None, None]
    ood = _answers("s", [0, -1, 1, 1], K=3, reasons=reasons)
    assert compare_answers(champion, ood)["ood_rate"]["shadow"] == pytest.approx(1 / 4)
    assert compare_answers(champion, _answers("s", [], K=3))["agreement"] is None
    assert align_states(np.array([]), np.array([])) == {}


def test_answer_window_keeps_the_newest_rows():
    window = AnswerWindow(5)
    for minute in range(4):
        start = f"2024-01-02T14:{30 + 3 * minute}Z"
        window.add(_answers("c", [0, 1, 0], K=2, start=start))
    kept = window.frame()
    assert len(kept) == len(window) == 5
    assert kept["ts"].is_monotonic_increasing
    assert kept["ts"].iloc[-1] == pd.Timestamp("2024-01-02T14:41Z")


def test_requests_become_bar_frames_and_errors_name_row_and_field():
    body = BarsRequest.model_validate(
        {
            "ts": "2024-01-02T14:30:00Z",
            "bars": [
                {"symbol": "A", "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 10},
                {"symbol": "B", "open": 1, "high": 2, "low": 0.5, "close": None, "volume": 10},
            ],
        }
    )
    frame = bars_frame(body)
    assert frame["symbol"].tolist() == ["A", "B"]
    assert str(frame["ts"].dt.tz) == "UTC" and np.isnan(frame["close"].iloc[1])
    with pytest.raises(ValidationError) as caught:
        BarsRequest.model_validate(
            {
                "ts": "2024-01-02T14:30:00Z",
                "bars": [
                    {"symbol": "A", "open": 1, "high": 2, "low": 0.5, "close": 1.5},
                    {"symbol": "B", "open": "x", "high": 2, "low": 0.5, "close": 1, "volume": 1},
                ],
            }
        )
    message = validation_message(caught.value)
    assert message.startswith("bars[0].volume: Field required; bars[1].open: Input should be")
    naive = BarsRequest.model_validate(
        {"ts": "2024-01-02T14:30:00", "bars": body.model_dump()["bars"]}
    )
    with pytest.raises(ValueError, match="time zone"):
        bars_frame(naive)


def test_answer_records_carry_labels_and_nulls():
    frame = _answers("c", [1, -1], K=2)
    frame["loglik"] = [-1.5, np.nan]
    frame["entropy"] = [0.0, np.nan]
    frame.loc[1, "state_prob"] = np.nan
    records = orjson.loads(orjson.dumps(answer_records(frame, {1: "calm"})))
    assert records[0]["label"] == "calm" and records[0]["posterior"] == [0.0, 1.0]
    assert records[0]["ts"] == "2024-01-02T14:30:00+00:00"
    assert records[1] == {
        **records[1],
        "state_id": -1,
        "label": None,
        "posterior": None,
        "loglik": None,
        "state_prob": None,
        "reason": "warming up",
        "is_unknown": True,
    }


def _body(n: int = 3) -> dict:
    return {
        "ts": "2024-01-02T09:30:00-05:00",
        "bars": [
            {
                "symbol": f"S{i}",
                "open": 1 + i,
                "high": 2.5,
                "low": 0.5,
                "close": 1.5,
                "volume": 10,
                **({"is_gap": True} if i == 1 else {}),
            }
            for i in range(n)
        ],
    }


def test_the_columnar_parser_equals_the_validator():
    body = _body()
    body["bars"][2]["close"] = None  # allowed: that row is refused by the engine
    fast = parse_bars(body)
    slow = bars_frame(BarsRequest.model_validate(body))
    pd.testing.assert_frame_equal(fast, slow)
    assert fast["ts"].iloc[0] == pd.Timestamp("2024-01-02T14:30Z")
    assert fast["is_gap"].tolist() == [False, True, False]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b["bars"][1].pop("close"), "bars[1].close: Field required"),
        (lambda b: b["bars"][2].update(open="x"), "bars[2].open: Input should be a valid number"),
        (lambda b: b["bars"][0].update(symbol=5), "bars[0].symbol: Input should be a valid string"),
        (lambda b: b["bars"][0].update(extra=1), "bars[0].extra: Extra inputs are not permitted"),
        (
            lambda b: b["bars"][1].update(is_gap="maybe"),
            "bars[1].is_gap: Input should be a valid boolean",
        ),
        (lambda b: b.update(bars=[]), "bars: List should have at least 1 item"),
        (lambda b: b.pop("ts"), "ts: Field required"),
    ],
)
def test_the_parser_names_row_and_field(change, message):
    body = _body()
    change(body)
    with pytest.raises(ValidationError) as caught:
        parse_bars(body)
    assert validation_message(caught.value).startswith(message)


def _columns(body: dict) -> dict:
    rows = body["bars"]
    names = ["symbol", "open", "high", "low", "close", "volume"]
    columns = {name: [row[name] for row in rows] for name in names}
    return {
        "ts": body["ts"],
        "columns": {**columns, "is_gap": [r.get("is_gap", False) for r in rows]},
    }


def test_a_columnar_body_gives_the_same_bars_and_answers_in_columns():
    body = _body()
    body["bars"][2]["close"] = None
    pd.testing.assert_frame_equal(parse_columns(_columns(body)), parse_bars(body))
    frame = _answers("c", [1, -1], K=2)
    frame["loglik"] = [-1.5, np.nan]
    frame["entropy"] = [0.0, np.nan]
    frame.loc[1, "state_prob"] = np.nan
    columns = orjson.loads(
        orjson.dumps(answer_columns(frame, {1: "calm"}), option=orjson.OPT_SERIALIZE_NUMPY)
    )
    records = orjson.loads(orjson.dumps(answer_records(frame, {1: "calm"})))
    for i, record in enumerate(records):
        for name, value in record.items():
            got = columns[name][i]
            assert got == value or (value is None and got == [None, None]), (name, i)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c["columns"]["close"].__setitem__(1, "x"),
            "columns.close[1]: expected a number",
        ),
        (lambda c: c["columns"]["open"].pop(), "columns.open: expected a list of 3 values"),
        (lambda c: c["columns"]["symbol"].__setitem__(2, 7), "columns.symbol[2]: expected a name"),
        (lambda c: c["columns"].pop("low"), "columns: unknown [], missing ['low']"),
        (lambda c: c["columns"]["is_gap"].__setitem__(0, 1), "columns.is_gap[0]: expected true"),
        (lambda c: c.update(ts="2024-01-02T14:30:00"), "ts: expected a time zone"),
        (lambda c: c.pop("ts"), "body: expected the keys ts and columns"),
    ],
)
def test_a_bad_columnar_body_names_column_and_row(change, message):
    body = _columns(_body())
    change(body)
    with pytest.raises(ValueError) as caught:
        parse_columns(body)
    assert str(caught.value).startswith(message)


def test_api_keys_from_env_and_file(tmp_path):
    file = tmp_path / "keys"
    file.write_text("# operators\nfile-key-0123456789abcdef\n\n")
    keys = load_api_keys(
        {"REGIMES_API_KEYS": "env-key-0123456789abcdef", "REGIMES_API_KEYS_FILE": str(file)}
    )
    assert keys == ("env-key-0123456789abcdef", "file-key-0123456789abcdef")
    digests = key_digests(keys)
    # The ingress holds digests: no key, nor any part of one, is in them.
    assert all(len(d) == 64 and not any(k[:8] in d for k in keys) for d in digests)
    assert check_authorization("Bearer file-key-0123456789abcdef", digests) == "ok"
    assert check_authorization("Basic file-key-0123456789abcdef", digests) == "missing"
    assert check_authorization("Bearer file-key-0123456789abcdeX", digests) == "wrong"
    # A key is not its digest: sending a digest as the key is refused.
    assert check_authorization(f"Bearer {digests[0]}", digests) == "wrong"
    assert check_authorization("Bearer anything", ()) == "wrong"
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_api_keys({"REGIMES_API_KEYS": "short"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_api_keys({"REGIMES_API_KEYS_FILE": str(tmp_path / "missing")})


def test_the_service_composite_ages_fx_states_in_market_time():
    """The ingress learns each symbol's market calendar once: an FX 1h state from Friday's
    last bar is fresh on Sunday (market closed), an equity's is stale (wall clock)."""
    from datetime import timedelta

    from regimes.config.markets import MarketConfig, MarketsConfig
    from regimes.data.markets import MarketBook
    from regimes.live.gateway import composite, learn_calendar
    from regimes.live.sync import TimeframeSynchronizer

    config = MarketsConfig(
        default="equities",
        markets={"equities": MarketConfig(calendar="session"), "fx": MarketConfig(calendar="24x5")},
    )
    looked_up = []

    def markets():
        looked_up.append(1)
        return MarketBook(config, None, {"EURUSD": "fx"})

    sync = TimeframeSynchronizer({"1h": timedelta(hours=4)})
    sync.set_champion("1h", "m1")
    friday = pd.Timestamp("2024-03-08 21:00", tz="UTC")  # 16:00 New York, the last FX hour
    sync.update(
        pd.DataFrame(
            {
                "symbol": ["EURUSD", "SPY"],
                "ts": [friday, friday - pd.Timedelta(hours=1)],
                "timeframe": "1h",
                "model_id": "m1",
                "state_id": [1, 2],
                "state_prob": [0.9, 0.8],
                "is_unknown": False,
                "ood_reason": None,
            }
        )
    )
    sunday = pd.Timestamp("2024-03-10 16:00", tz="UTC")
    for symbol in ("EURUSD", "SPY", "EURUSD"):
        learn_calendar(sync, symbol, markets)
    assert len(looked_up) == 2  # once per symbol
    fx = composite(sync, "EURUSD", sunday, {"1h": "m1"}, {})["timeframes"]["1h"]
    spy = composite(sync, "SPY", sunday, {"1h": "m1"}, {})["timeframes"]["1h"]
    assert fx["state_id"] == 1 and fx["reason"] is None
    assert spy["state_id"] == -1 and spy["reason"].startswith("stale")
