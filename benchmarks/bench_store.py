"""State store: MERGE throughput and pruned reads of the Delta state table.

* merge: ``StateStore.write`` of one day of 1m states for 100 symbols (390 bars x 100 =
  39,000 rows, d = 8, K = 8): validation, the log check and one MERGE on
  (symbol, timeframe, model_id, ts) into a fresh table, then re-merging the same day
  (the idempotent path: every row matches and is rewritten). Anchor: deltalake's plain
  ``write_deltalake(mode="append")`` of the same, already validated Arrow table with the
  same partitioning into a fresh table (no key matching: writing twice would duplicate).
* read: ``StateStore.read`` of one symbol-day (partition pruning opens 1 file) against
  a full-table scan of the same table (every file), both to pandas, in the same run.

Timed on the whole machine (DataFusion and Arrow use every core); each figure is the
best of several runs, local disk under a temporary directory.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import best_of, table  # noqa: E402

from regimes.storage.state_store import StateStore  # noqa: E402
from regimes.storage.state_table import PARTITION_COLUMNS, to_state_table  # noqa: E402

SEED = 5
SYMBOLS, BARS, D, K = 100, 390, 8, 8
READ_DAYS = 5  # the table the reads run on: 5 days x 100 symbols = 195,000 rows
REPEATS = 3
DAY0 = pd.Timestamp("2024-01-02T14:30Z")


def day_of_states(day: int, rng: np.random.Generator) -> pd.DataFrame:
    """One session of 1m answers for every symbol, shaped like ``InferenceEngine.step``'s."""
    n = SYMBOLS * BARS
    ts = DAY0 + pd.Timedelta(days=day) + pd.to_timedelta(np.tile(np.arange(BARS), SYMBOLS), "min")
    posterior = rng.dirichlet(np.ones(K), n)
    raw = posterior.argmax(axis=1)
    unknown = rng.random(n) < 0.05
    frame = pd.DataFrame(
        {
            "symbol": np.repeat([f"S{i:03d}" for i in range(SYMBOLS)], BARS),
            "ts": ts,
            "timeframe": "1m",
            "model_id": "1m-20240101T0000Z-abcdef012345",
            "state_id": np.where(unknown, -1, raw),
            "raw_state_id": raw,
            "state_prob": posterior.max(axis=1),
            "loglik": rng.normal(-8.0, 2.0, n),
            "entropy": rng.uniform(0.0, 1.5, n),
            "is_unknown": unknown,
            "ood_reason": np.where(unknown, "loglik", None),
        }
    )
    for k in range(D):
        frame[f"z_{k:02d}"] = rng.normal(size=n)
    for k in range(K):
        frame[f"p_{k:02d}"] = posterior[:, k]
    return frame


def _fresh(folder: Path, name: str) -> StateStore:
    root = folder / name
    shutil.rmtree(root, ignore_errors=True)
    return StateStore(str(root))


def bench_merge(folder: Path, frame: pd.DataFrame) -> tuple[list[list[str]], StateStore]:
    from deltalake import write_deltalake  # the anchor only: the core goes through the store

    rows = len(frame)
    first, again, anchor = [], [], []
    for run in range(REPEATS):
        store = _fresh(folder, f"merge-{run}")
        started = time.perf_counter()
        store.write(frame, D, K)
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.write(frame, D, K)
        again.append(time.perf_counter() - started)
        assert len(store.read("1m", frame["model_id"].iloc[0], columns=["ts"])) == rows
    validated = to_state_table(frame, D, K)
    for run in range(REPEATS):
        root = folder / f"append-{run}"
        started = time.perf_counter()
        write_deltalake(str(root), validated, partition_by=list(PARTITION_COLUMNS))
        anchor.append(time.perf_counter() - started)
    validation, _ = best_of(lambda: to_state_table(frame, D, K), repeats=REPEATS)

    def rate(seconds: list[float]) -> str:
        return (
            f"{rows / min(seconds):,.0f} rows/s ({min(seconds):.2f} s; median "
            f"{statistics.median(seconds):.2f} s)"
        )

    size = f"{rows:,} rows (1 day, {SYMBOLS} symbols x {BARS} bars), d={D}, K={K}"
    append = f"{rows / min(anchor):,.0f} rows/s ({min(anchor):.2f} s)"
    table_rows = [
        ["merge into a fresh table", size, rate(first), append, f"{min(first) / min(anchor):.2f}"],
        ["re-merge the same day", size, rate(again), append, f"{min(again) / min(anchor):.2f}"],
        [
            "of which validation (`to_state_table`)",
            size,
            f"{validation * 1e3:.0f} ms",
            "-",
            "-",
        ],
    ]
    return table_rows, store


def bench_read(folder: Path, rng: np.random.Generator) -> tuple[list[list[str]], dict]:
    store = _fresh(folder, "read")
    model = None
    for day in range(READ_DAYS):
        frame = day_of_states(day, rng)
        model = frame["model_id"].iloc[0]
        store.write(frame, D, K)
    files_all = len(store.files("1m", model))
    start = DAY0.normalize() + pd.Timedelta(days=2)
    end = start + pd.Timedelta(days=1)
    files_one = len(store.files("1m", model, "S042", start, end))
    one = store.read("1m", model, "S042", start, end)
    full = store.read("1m", model)
    assert len(one) == BARS and len(full) == READ_DAYS * SYMBOLS * BARS
    one_time, one_median = best_of(lambda: store.read("1m", model, "S042", start, end), 7)
    full_time, full_median = best_of(lambda: store.read("1m", model), REPEATS)
    rows = [
        [
            "read one symbol-day",
            f"{BARS} of {len(full):,} rows, {files_one} of {files_all} files",
            f"{one_time * 1e3:.0f} ms (median {one_median * 1e3:.0f} ms)",
            f"{full_time * 1e3:.0f} ms (median {full_median * 1e3:.0f} ms)",
            f"{full_time / one_time:.0f}x faster",
        ]
    ]
    return rows, {"files_all": files_all, "files_one": files_one, "rows": len(full)}


def run() -> str:
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    folder = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        merge_rows, _ = bench_merge(folder, day_of_states(0, rng))
        read_rows, read_details = bench_read(folder, rng)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return "\n".join(
        [
            "## store: Delta state table merges and pruned reads",
            "",
            'Anchors: merge, deltalake\'s plain `write_deltalake(mode="append")` of the same',
            "validated Arrow table with the same partitioning (no key matching, so not",
            "idempotent); read, a full-table scan of the same table. Local disk, all cores,",
            f"best of {REPEATS} (reads of one symbol-day: best of 7). A merge includes the",
            "batch's validation, the `_delta_log` check and the commit; the first one also",
            "creates the table.",
            "",
            table(
                merge_rows,
                ["operation", "size", "regimes", "anchor (append)", "time regimes/anchor"],
            ),
            "",
            table(
                read_rows,
                ["operation", "size", "regimes", "anchor (full scan)", "speed regimes/anchor"],
            ),
            "",
            f"Read table: {READ_DAYS} days x {SYMBOLS} symbols = {read_details['rows']:,} rows "
            f"in {read_details['files_all']} files (one per symbol-day, written by "
            f"{READ_DAYS} merges). Total benchmark time: {time.perf_counter() - started:.0f} s.",
        ]
    )


if __name__ == "__main__":
    print(run())
