"""The Delta state store: layout, idempotent merges, concurrent writers, refused batches,
damaged logs, partition pruning, maintenance, and the same on S3 (a moto server)."""

from __future__ import annotations

import multiprocessing
import re
import threading
import zlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from regimes.config.settings import resolve_settings
from regimes.data import sql as db
from regimes.errors import BadInputError, StoreError, UnsafeNameError
from regimes.paths import state_partition_dir
from regimes.storage.registry import Registry
from regimes.storage.state_store import StateStore
from regimes.storage.state_table import P_COLUMNS, STATE_SCHEMA, Z_COLUMNS, latest_per_symbol

pytestmark = pytest.mark.integration

D, K = 8, 8
DAYS = ("2024-01-02", "2024-01-03", "2024-01-04")
PART_PATH = re.compile(
    r"^timeframe=(1m|5m|15m|1h|1d)/model_id=[A-Za-z0-9._-]+/symbol=[A-Za-z0-9._%-]+/"
    r"date=\d{4}-\d{2}-\d{2}/part-[^/]+\.parquet$"
)


def state_rows(
    symbols,
    days,
    *,
    bars: int = 6,
    d: int = D,
    K: int = K,
    model_id: str = "m1",
    timeframe: str = "1m",
    seed: int = 0,
) -> pd.DataFrame:
    """Answers shaped like ``InferenceEngine.step``'s: the first two bars of every
    symbol-day are UNKNOWN (warming up, no posterior), the rest are settled states.
    Each (symbol, day) draws from its own generator, so two writers of the same
    symbol-day write the same rows."""
    parts = []
    step = pd.Timedelta(timeframe.replace("m", "min"))
    for day in days:
        open_ = pd.Timestamp(day, tz="UTC") + pd.Timedelta("14h30min")
        ts = pd.date_range(open_, periods=bars, freq=step)
        for symbol in symbols:
            rng = np.random.default_rng([seed, zlib.crc32(f"{symbol}{day}{model_id}".encode())])
            posterior = rng.dirichlet(np.ones(K), bars)
            raw = posterior.argmax(axis=1)
            warming = np.arange(bars) < 2
            frame = pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": ts,
                    "timeframe": timeframe,
                    "model_id": model_id,
                    "state_id": np.where(warming, -1, raw),
                    "raw_state_id": np.where(warming, -1, raw),
                    "state_prob": np.where(warming, np.nan, posterior.max(axis=1)),
                    "loglik": np.where(warming, np.nan, rng.normal(-5, 1, bars)),
                    "entropy": np.where(warming, np.nan, rng.uniform(0, 1, bars)),
                    "is_unknown": warming,
                    "ood_reason": np.where(warming, "warming up", None),
                }
            )
            for k in range(d):
                frame[f"z_{k:02d}"] = np.where(warming, np.nan, rng.normal(size=bars))
            for k in range(K):
                frame[f"p_{k:02d}"] = np.where(warming, np.nan, posterior[:, k])
            parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def as_stored(frame: pd.DataFrame) -> pd.DataFrame:
    """What a read returns for ``frame``: every column, date added, sorted (symbol, ts)."""
    out = frame.copy()
    for column in (*Z_COLUMNS, *P_COLUMNS):
        if column not in out:
            out[column] = np.nan
    out["date"] = out["ts"].dt.strftime("%Y-%m-%d")
    out["ood_reason"] = out["ood_reason"].astype(object).where(out["ood_reason"].notna(), None)
    out = out[STATE_SCHEMA.names].sort_values(["symbol", "ts"], kind="stable")
    return out.reset_index(drop=True)


def tree(root: str | Path) -> set[str]:
    """Every file under ``root`` (relative, POSIX separators)."""
    root = Path(root)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def commit_file(store: StateStore, version: int) -> Path:
    return Path(store.root) / "_delta_log" / f"{version:020d}.json"


@pytest.fixture
def store(home) -> StateStore:
    return StateStore(str(home / "states"))


@pytest.fixture
def filled(store, seed) -> tuple[StateStore, pd.DataFrame]:
    """A table with three symbols x three days, written in three batches (versions 0-3)."""
    frame = state_rows(["AAA", "BBB", "CCC"], DAYS, seed=seed)
    for day in DAYS:
        store.write(frame[frame["ts"].dt.strftime("%Y-%m-%d") == day], D, K)
    return store, frame


# --------------------------------------------------------------------------- round trip


def test_round_trip_keeps_every_column_and_nulls_past_d_and_K(store, seed):
    frame = state_rows(["SPY", "QQQ"], DAYS[:2], d=3, K=4, seed=seed)
    assert store.write(frame, 3, 4) == len(frame)

    back = store.read("1m", "m1")
    pd.testing.assert_frame_equal(back, as_stored(frame))
    assert str(back["ts"].dt.tz) == "UTC"
    assert back[list(Z_COLUMNS[3:]) + list(P_COLUMNS[4:])].isna().all().all()
    assert back.loc[back["is_unknown"], "ood_reason"].eq("warming up").all()
    assert back.loc[~back["is_unknown"], "ood_reason"].isna().all()

    arrow = store.read("1m", "m1", as_arrow=True)
    assert isinstance(arrow, pa.Table)
    assert [(f.name, f.type) for f in arrow.schema] == [(f.name, f.type) for f in STATE_SCHEMA]
    assert arrow["z_05"].null_count == len(frame)  # NULL past d, never NaN

    picked = store.read("1m", "m1", symbols="QQQ", columns=["state_id", "ts"])
    assert list(picked.columns) == ["state_id", "ts"]
    assert len(picked) == (frame["symbol"] == "QQQ").sum()


def test_the_tree_on_disk_is_timeframe_model_symbol_date(store, seed):
    store.write(state_rows(["SPY", "BRK.B"], DAYS[:2], seed=seed), D, K)
    store.write(state_rows(["^GSPC"], DAYS[:1], timeframe="5m", model_id="m-5m.2", seed=seed), D, K)

    files = tree(store.root)
    data = {f for f in files if not f.startswith("_delta_log/")}
    assert data and all(PART_PATH.match(f) for f in data), sorted(data)
    folders = {f.rsplit("/", 1)[0] for f in data}
    assert folders == {
        "timeframe=1m/model_id=m1/symbol=SPY/date=2024-01-02",
        "timeframe=1m/model_id=m1/symbol=SPY/date=2024-01-03",
        "timeframe=1m/model_id=m1/symbol=BRK.B/date=2024-01-02",
        "timeframe=1m/model_id=m1/symbol=BRK.B/date=2024-01-03",
        # Hive-style partition paths escape '^' (index tickers); the value stays ^GSPC.
        "timeframe=5m/model_id=m-5m.2/symbol=%5EGSPC/date=2024-01-02",
    }
    assert store.read("5m", "m-5m.2", "^GSPC")["symbol"].unique().tolist() == ["^GSPC"]
    # regimes.paths names the same directories.
    assert state_partition_dir(store.root, "5m", "m-5m.2", "^GSPC", date(2024, 1, 2)).is_dir()
    assert state_partition_dir(store.root, "1m", "m1", "BRK.B", date(2024, 1, 3)).is_dir()
    assert len(store.files("5m", "m-5m.2", "^GSPC")) == 1
    top = {p.name for p in Path(store.root).iterdir()}
    assert top == {"_delta_log", "timeframe=1m", "timeframe=5m"}


def test_a_day_is_the_utc_date_of_ts(store):
    frame = state_rows(["SPY"], ["2024-01-02"], bars=3, timeframe="1h")
    frame["ts"] = pd.to_datetime(
        ["2024-01-02T23:00Z", "2024-01-03T00:00Z", "2024-01-03T01:00Z"], utc=True
    )
    store.write(frame, D, K)
    assert store.read("1h", "m1")["date"].tolist() == ["2024-01-02", "2024-01-03", "2024-01-03"]


# --------------------------------------------------------------------------- idempotency


def test_writing_the_same_rows_twice_keeps_one_copy_and_newer_values_win(filled):
    store, frame = filled
    first = store.read("1m", "m1")
    version = store.version()

    assert store.write(frame, D, K) == len(frame)
    again = store.read("1m", "m1")
    pd.testing.assert_frame_equal(again, first)
    assert store.version() == version + 1  # one commit for the whole batch

    changed = frame[(frame["symbol"] == "BBB") & ~frame["is_unknown"]].copy()
    changed["state_prob"] = 1.0
    changed["z_00"] = 42.0
    changed["ood_reason"] = "revised"
    store.write(changed, D, K)
    after = store.read("1m", "m1")
    assert len(after) == len(frame)
    assert not after.duplicated(["symbol", "timeframe", "model_id", "ts"]).any()
    revised = after.merge(changed[["symbol", "ts"]], on=["symbol", "ts"])
    assert (revised["state_prob"] == 1.0).all() and (revised["z_00"] == 42.0).all()
    assert (revised["ood_reason"] == "revised").all()
    untouched = after[after["symbol"] != "BBB"].reset_index(drop=True)
    pd.testing.assert_frame_equal(untouched, first[first["symbol"] != "BBB"].reset_index(drop=True))


def test_an_empty_batch_makes_no_commit(store, seed):
    assert store.write(pd.DataFrame(), D, K) == 0
    assert store.write(state_rows(["SPY"], DAYS[:1]).iloc[:0], D, K) == 0
    assert not store.exists() and not Path(store.root).exists()

    store.write(state_rows(["SPY"], DAYS[:1], seed=seed), D, K)
    version, files = store.version(), tree(store.root)
    assert store.write(state_rows(["SPY"], DAYS[:1]).iloc[:0], D, K) == 0
    assert store.version() == version and tree(store.root) == files


# --------------------------------------------------------------------------- concurrency


def _write_batches(root: str, symbols: list[str], seed: int, barrier) -> None:
    """One writer process: four daily batches, started together with the other."""
    store = StateStore(root)
    barrier.wait(timeout=120)
    for day in (*DAYS, "2024-01-05"):
        store.write(state_rows(symbols, [day], bars=20, seed=seed), D, K)


def test_two_writer_processes_lose_nothing(home, seed):
    """Both start on an empty root (racing to create the table) and overlap on CCC."""
    root = str(home / "states")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    writers = [
        context.Process(target=_write_batches, args=(root, symbols, seed, barrier))
        for symbols in (["AAA", "BBB", "CCC"], ["CCC", "DDD"])
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=300)
    assert [p.exitcode for p in writers] == [0, 0]

    expected = as_stored(
        state_rows(["AAA", "BBB", "CCC", "DDD"], (*DAYS, "2024-01-05"), bars=20, seed=seed)
    )
    stored = StateStore(root).read("1m", "m1")
    pd.testing.assert_frame_equal(stored, expected)
    # 2 x 4 merges after the table's creation; when both writers race to create the
    # table, the loser's CREATE can land as a second (empty, same-schema) commit.
    operations = [entry["operation"] for entry in StateStore(root).history()]
    assert operations.count("MERGE") == 8
    assert set(operations) == {"MERGE", "CREATE TABLE"} and len(operations) in (9, 10)


def _racing(monkeypatch, rival: pd.DataFrame, times: int) -> None:
    """Make another writer commit ``rival`` between each of the next ``times`` MERGEs
    opening the table and committing: their commits then lose the race."""
    original = StateStore._commit
    races = {"left": times, "racing": False}

    def commit(self, what, operation):
        def raced(delta):
            if races["left"] > 0 and not races["racing"]:
                races["left"] -= 1
                races["racing"] = True  # the rival's own commit is not raced
                try:
                    StateStore(self.root).write(rival, D, K)  # commits first
                finally:
                    races["racing"] = False
            return operation(delta)

        return original(self, what, raced)

    monkeypatch.setattr(StateStore, "_commit", commit)


def test_a_commit_that_loses_a_race_is_rerun_on_the_new_version(filled, monkeypatch, caplog):
    store, frame = filled
    version = store.version()
    rival = state_rows(["AAA"], ["2024-01-05"])
    batch = state_rows(["AAA"], ["2024-01-05"], model_id="m1", seed=1)
    batch["ts"] += pd.Timedelta("1h")  # same partition, other rows
    _racing(monkeypatch, rival, times=1)
    with caplog.at_level("INFO", logger="regimes.storage.state_store"):
        store.write(batch, D, K)
    assert "commit conflict (attempt 1 of" in caplog.text
    assert store.version() == version + 2
    stored = store.read("1m", "m1", "AAA", start="2024-01-05T00:00Z")
    pd.testing.assert_frame_equal(stored, as_stored(pd.concat([rival, batch])))


def test_a_writer_that_keeps_losing_gives_up_with_a_store_error(filled, monkeypatch):
    store, frame = filled
    monkeypatch.setattr("regimes.storage.state_store.COMMIT_ATTEMPTS", 3)
    monkeypatch.setattr("regimes.storage.state_store.BACKOFF_SECONDS", (0.001, 0.002))
    _racing(monkeypatch, state_rows(["AAA"], ["2024-01-05"]), times=3)
    version = store.version()
    with pytest.raises(StoreError, match="still in conflict with concurrent writers after 3"):
        store.write(state_rows(["AAA"], ["2024-01-05"], seed=1), D, K)
    assert store.version() == version + 3  # the rival's three commits, none of ours


# --------------------------------------------------------------------------- refused batches


def _set(column, row, value):
    def mutate(frame):
        frame[column] = frame[column].astype(object) if column in frame else np.nan
        frame.loc[row, column] = value
        return frame

    return mutate


BAD_BATCHES = {
    "missing column": (lambda f: f.drop(columns="state_prob"), "state_prob"),
    "missing z below d": (lambda f: f.drop(columns="z_03"), "z_03"),
    "unknown column": (lambda f: f.assign(colour="red"), "colour"),
    "string in z": (_set("z_02", 4, "0.5"), "column z_02, row 4"),
    "string in state_id": (_set("state_id", 3, "2"), "column state_id, row 3"),
    "fractional state_id": (lambda f: f.assign(state_id=f["state_id"] + 0.5), "state_id, row 0"),
    "state_id past K": (_set("state_id", 5, 8), "column state_id, row 5"),
    "boolean in loglik": (lambda f: f.assign(loglik=True), "loglik"),
    "naive ts": (lambda f: f.assign(ts=f["ts"].dt.tz_localize(None)), "timezone-naive"),
    "non-UTC ts": (lambda f: f.assign(ts=f["ts"].dt.tz_convert("America/New_York")), "UTC"),
    "missing ts": (lambda f: f.assign(ts=f["ts"].where(f.index != 2)), "column ts, row 2"),
    "z past d": (lambda f: f.assign(z_08=0.1), "column z_08, row 0"),
    "p past K": (_set("p_09", 7, 0.2), "column p_09, row 7"),
    "probability above 1": (_set("p_01", 6, 1.5), "column p_01, row 6"),
    "symbol with a slash": (_set("symbol", 2, "AA/A"), "path separator"),
    "symbol with dots": (_set("symbol", 1, ".."), "symbol"),
    "model_id escaping": (lambda f: f.assign(model_id="../m1"), "model_id"),
    "model_id not a string": (lambda f: f.assign(model_id=7), "model_id"),
    "unknown timeframe": (lambda f: f.assign(timeframe="2m"), "timeframe '2m'"),
    "duplicate key": (lambda f: pd.concat([f, f.iloc[[3]]], ignore_index=True), "duplicate key"),
    "is_unknown disagrees": (_set("is_unknown", 4, True), "row 4: is_unknown"),
    "UNKNOWN without reason": (_set("ood_reason", 0, None), "ood_reason, row 0"),
    "date not ts's day": (lambda f: f.assign(date="2024-01-01"), "column date"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_a_bad_batch_is_refused_and_the_table_is_unchanged(filled, case):
    store, frame = filled
    version, files, before = store.version(), tree(store.root), store.read("1m", "m1")
    mutate, message = BAD_BATCHES[case]
    batch = mutate(frame[frame["symbol"] == "AAA"].reset_index(drop=True).copy())
    with pytest.raises(BadInputError, match=re.escape(message)):
        store.write(batch, D, K)
    assert store.version() == version
    assert tree(store.root) == files
    pd.testing.assert_frame_equal(store.read("1m", "m1"), before)


def test_a_bad_first_batch_creates_no_table(store):
    frame = state_rows(["SPY"], DAYS[:1]).assign(symbol="S P Y")
    with pytest.raises(UnsafeNameError, match="symbol"):
        store.write(frame, D, K)
    with pytest.raises(BadInputError, match="d: expected 1..16"):
        store.write(state_rows(["SPY"], DAYS[:1]), 17, K)
    assert not store.exists()


def test_a_model_the_registry_does_not_know_is_refused(store, home, seed):
    registry = Registry(str(home / "registry"))
    registry.register("1m", "m1", artifact_path="models/m1", actor="test", reason="trained")
    store.write(state_rows(["SPY"], DAYS[:1], seed=seed), D, K, registry=registry)
    version = store.version()
    with pytest.raises(BadInputError, match="model_id m2 \\(1m\\) is not in the registry"):
        store.write(state_rows(["SPY"], DAYS[:1], model_id="m2"), D, K, registry=registry)
    with pytest.raises(BadInputError, match="model_id m1 \\(5m\\)"):
        store.write(state_rows(["SPY"], DAYS[:1], timeframe="5m"), D, K, registry=registry)
    assert store.version() == version


# --------------------------------------------------------------------------- damaged logs


def _delete(store, version):
    commit_file(store, version).unlink()
    return f"{version:020d}.json"


def _truncate(store, version, keep):
    path = commit_file(store, version)
    data = path.read_bytes()
    path.write_bytes(keep(data))
    return path.name


DAMAGE = {
    "a middle commit deleted": lambda s: _delete(s, 2),
    "the first commit deleted": lambda s: _delete(s, 0),
    "the newest commit emptied": lambda s: _truncate(s, 3, lambda data: b""),
    "the newest commit cut mid-line": lambda s: _truncate(s, 3, lambda data: data[:-40]),
    "the newest commit's last line cut": lambda s: _truncate(
        s, 3, lambda data: data[: data.rstrip(b"\n").rfind(b"\n")]
    ),
    "an older commit cut mid-line": lambda s: _truncate(s, 1, lambda data: data[: len(data) // 2]),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_log_is_a_store_error_naming_the_file(filled, case):
    store, frame = filled
    store.read("1m", "m1")  # checked once while healthy: the damage must still be seen
    name = DAMAGE[case](store)
    with pytest.raises(StoreError, match=re.escape(name)):
        store.read("1m", "m1")
    with pytest.raises(StoreError, match=re.escape(name)):
        store.write(frame.iloc[:3], D, K)
    with pytest.raises(StoreError, match=re.escape(name)):
        store.summary()


def test_a_missing_log_or_table_is_a_clear_store_error(filled, home):
    with pytest.raises(StoreError, match="no state table at .*nowhere"):
        StateStore(str(home / "nowhere")).read("1m", "m1")
    store, _ = filled
    for path in sorted((Path(store.root) / "_delta_log").iterdir()):
        path.unlink()
    with pytest.raises(StoreError, match="has data files but no readable Delta log"):
        store.read("1m", "m1")


def test_a_missing_data_file_is_a_store_error_naming_it(filled):
    store, _ = filled
    victim = store.files("1m", "m1", "BBB", "2024-01-03T00:00Z", "2024-01-04T00:00Z")[0]
    (Path(store.root) / victim).unlink()
    with pytest.raises(StoreError, match=re.escape(victim.rsplit("/", 1)[-1])):
        store.read("1m", "m1")


# --------------------------------------------------------------------------- reads


def test_a_read_opens_only_the_partitions_it_asks_for(filled):
    store, frame = filled
    day = ("2024-01-03T00:00Z", "2024-01-04T00:00Z")
    files = store.files("1m", "m1", "AAA", *day)
    assert len(files) == 1 and "/symbol=AAA/date=2024-01-03/" in files[0]
    assert len(store.files("1m", "m1")) == 9
    assert len(store.files("1m", "m1", ["AAA", "CCC"], start=day[0])) == 4

    # Proof that the read itself prunes: every other partition loses its data file.
    for other in set(store.files("1m", "m1")) - set(files):
        (Path(store.root) / other).unlink()
    one_day = store.read("1m", "m1", "AAA", *day)
    expected = frame[(frame["symbol"] == "AAA") & (frame["ts"].dt.day == 3)]
    pd.testing.assert_frame_equal(one_day, as_stored(expected))
    with pytest.raises(StoreError, match="not found"):
        store.read("1m", "m1")


def test_a_read_filters_ts_exactly_and_sorts_by_symbol_then_ts(filled):
    store, frame = filled
    start, end = pd.Timestamp("2024-01-03T14:31Z"), pd.Timestamp("2024-01-04T14:33Z")
    got = store.read("1m", "m1", ["CCC", "AAA"], start=start, end=end)
    want = frame[
        frame["symbol"].isin(["AAA", "CCC"]) & (frame["ts"] >= start) & (frame["ts"] < end)
    ]
    pd.testing.assert_frame_equal(got, as_stored(want))
    assert got["symbol"].is_monotonic_increasing
    assert store.read("1m", "other-model").empty  # a model with no rows: empty, not an error


def test_read_arguments_are_checked(filled):
    store, _ = filled
    with pytest.raises(BadInputError, match="start: expected a timezone-aware"):
        store.read("1m", "m1", start="2024-01-03")
    with pytest.raises(BadInputError, match="columns: unknown"):
        store.read("1m", "m1", columns=["state"])
    with pytest.raises(UnsafeNameError, match="symbol"):
        store.read("1m", "m1", symbols=["../AAA"])
    with pytest.raises(UnsafeNameError, match="timeframe"):
        store.read("2h", "m1")


# --------------------------------------------------------------------------- summary, mirror


def test_summary_counts_rows_symbols_dates_and_occupancy(filled, seed):
    store, frame = filled
    store.write(state_rows(["SPY"], DAYS[:1], model_id="m-5m", timeframe="5m", seed=seed), D, K)
    summary = store.summary()
    assert summary[["timeframe", "model_id"]].values.tolist() == [["1m", "m1"], ["5m", "m-5m"]]
    row = summary.iloc[0]
    assert (row["rows"], row["symbols"]) == (len(frame), 3)
    assert (row["first_date"], row["last_date"]) == (DAYS[0], DAYS[-1])
    shares = frame["state_id"].value_counts(normalize=True)
    assert row["occupancy"] == pytest.approx({int(s): float(v) for s, v in shares.items()})
    assert list(row["occupancy"]) == sorted(row["occupancy"])
    assert store.summary("5m")["model_id"].tolist() == ["m-5m"]


def test_latest_per_symbol_feeds_current_states(filled, home):
    store, frame = filled
    latest = latest_per_symbol(store.read("1m", "m1"))
    assert latest["symbol"].tolist() == ["AAA", "BBB", "CCC"]
    assert (latest["ts"] == frame["ts"].max()).all()

    engine = db.make_engine(f"sqlite:///{home / 'regimes.db'}")
    try:
        db.create_schema(engine)
        warming = frame[frame["is_unknown"]]  # no posterior yet: state_prob NaN
        db.upsert_current_states(engine, latest_per_symbol(warming))
        db.upsert_current_states(engine, latest)
        current = db.read_current_states(engine).sort_values("symbol").reset_index(drop=True)
    finally:
        engine.dispose()
    pd.testing.assert_frame_equal(
        current[["symbol", "state_id", "is_unknown"]],
        latest[["symbol", "state_id", "is_unknown"]],
        check_dtype=False,
    )
    assert latest_per_symbol(warming)["state_prob"].eq(0.0).all()
    with pytest.raises(BadInputError, match="rows of 2 models"):
        latest_per_symbol(pd.concat([frame, frame.assign(model_id="m2")]))


# --------------------------------------------------------------------------- maintenance


def test_compact_and_vacuum_keep_the_rows(store, seed):
    frame = state_rows(["SPY", "QQQ"], DAYS[:1], bars=12, seed=seed)
    chunk = frame.groupby("symbol").cumcount() // 3
    for part in range(4):  # four commits, each adding a file to both partitions
        store.write(frame[chunk == part], D, K)
    before = store.read("1m", "m1")
    assert len(store.files("1m", "m1")) == 8

    metrics = store.compact()
    assert metrics["numFilesRemoved"] == 8 and metrics["numFilesAdded"] == 2
    assert len(store.files("1m", "m1")) == 2
    pd.testing.assert_frame_equal(store.read("1m", "m1"), before)

    assert store.vacuum() == []  # the default keeps 7 days of history
    stale = store.vacuum(0, dry_run=True)
    assert len(stale) == 8 and len(tree(store.root)) > len(stale)
    assert sorted(store.vacuum(0)) == sorted(stale)
    data = {f for f in tree(store.root) if not f.startswith("_delta_log/")}
    assert data == set(store.files("1m", "m1"))
    pd.testing.assert_frame_equal(store.read("1m", "m1"), before)
    with pytest.raises(BadInputError, match="retention_hours"):
        store.vacuum(-1)


# --------------------------------------------------------------------------- object store


@pytest.fixture
def s3_store(s3_environ, home) -> StateStore:
    environ = {**s3_environ, "REGIMES_STATES_URI": f"{s3_environ['REGIMES_TEST_BUCKET']}/states"}
    settings = resolve_settings(home, environ=environ)
    return StateStore(settings.states_uri, settings.storage_options)


def test_s3_write_read_and_idempotency(s3_store, seed):
    assert s3_store.root.startswith("s3://") and not s3_store.exists()
    with pytest.raises(StoreError, match="no state table at s3://"):
        s3_store.read("1m", "m1")
    frame = state_rows(["SPY", "QQQ"], DAYS[:2], seed=seed)
    assert s3_store.write(frame, D, K) == len(frame)
    assert s3_store.write(frame, D, K) == len(frame)
    assert s3_store.version() == 2
    pd.testing.assert_frame_equal(s3_store.read("1m", "m1"), as_stored(frame))
    files = s3_store.files("1m", "m1", "SPY", "2024-01-03T00:00Z", "2024-01-04T00:00Z")
    assert len(files) == 1 and PART_PATH.match(files[0])
    assert s3_store.summary()["rows"].tolist() == [len(frame)]


def test_s3_concurrent_writers_lose_nothing(s3_store, seed):
    s3_store.write(state_rows(["SPY"], DAYS[:1], seed=seed), D, K)  # the table exists
    errors = []

    def writer(symbols):
        try:
            for day in DAYS:
                s3_store.write(state_rows(symbols, [day], seed=seed), D, K)
        except Exception as exc:  # reported below: a thread's exception is lost otherwise
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (["AAA", "SPY"], ["SPY", "BBB"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    expected = as_stored(state_rows(["AAA", "BBB", "SPY"], DAYS, seed=seed))
    pd.testing.assert_frame_equal(s3_store.read("1m", "m1"), expected)
