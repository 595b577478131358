"""One engine shard of the live service: the symbols a stable hash gives it, every model
of its timeframe that is live (the champion and its shadows), and its restart record.

The live service (``regimes.serve``) holds one :class:`EngineShard` per (timeframe,
shard) in a Ray Serve replica and only moves requests to it; everything a shard decides
is here, so it runs and is tested without Ray.

Per batch (:meth:`EngineShard.step`): the champion's engine answers; the accepted bars
are appended to the shard's bar journal (:mod:`regimes.live.journal`) before the answers
go back; the same bars are queued for every shadow (:meth:`step_shadows` works the
queue after the reply, so the caller never waits for a shadow and a failing shadow is
counted and logged, never raised); bars and answers wait in memory for the next
:meth:`flush`, which lands them in the shard's landing folder (:mod:`regimes.live.landing`),
off the request path; the service's writer takes them from there to the database, to
``current_states`` (champion answers) and to the Delta state store.

**Restarts without loss.** :meth:`checkpoint` drains the shadow queue, writes what is
pending, snapshots every engine (:mod:`regimes.live.snapshot`) and starts a new journal;
a manifest names the snapshots and the journal that follows them. A shard process that
dies anywhere is rebuilt by :meth:`restore`: snapshots + every journal since, stepped
again through the same engines, which gives the answers an uninterrupted run gave
(they are written again: the state store's merge is idempotent, so at least once and
never twice).

**Model changes** (:meth:`set_models`): a promoted shadow's engine is already warm, so
it answers the next bar as champion with no warm-up; a new shadow cold-starts from the
stored bars (database plus the shard's own not-yet-written bars); a retired model is
dropped.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from regimes.errors import BadInputError, StoreError
from regimes.live.engine import InferenceEngine
from regimes.live.journal import BarJournal, read_journals, remove_journals
from regimes.live.landing import Landing
from regimes.live.shadow import AnswerWindow
from regimes.live.snapshot import read_snapshot, write_snapshot
from regimes.model.loaded import LoadedModel
from regimes.paths import check_model_id, check_timeframe_name

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def shard_folder(serve_dir: str | Path, timeframe: str, index: int) -> Path:
    """The folder of shard ``index`` of ``timeframe`` under the service's folder."""
    return Path(serve_dir) / check_timeframe_name(timeframe) / f"shard-{int(index)}"


def landing_folder(folder: str | Path) -> Path:
    """The landing folder of the shard in ``folder`` (:mod:`regimes.live.landing`)."""
    return Path(folder) / "landing"


class NoChampionError(BadInputError):
    """The timeframe has no champion model to answer with."""


@dataclass(frozen=True)
class ShardOptions:
    """How a shard keeps its restart record and its comparison window.

    Parameters
    ----------
    compare_rows : int
        Newest answers kept per model for champion-vs-shadow comparisons.
    """

    compare_rows: int = 50_000


@dataclass
class Pending:
    """Bars and answers accepted but not yet written."""

    bars: list[pd.DataFrame] = field(default_factory=list)
    answers: list[pd.DataFrame] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.bars or self.answers)

    def rows(self) -> int:
        return sum(len(b) for b in self.bars) + sum(len(a) for a in self.answers)


@dataclass
class Checkpoint:
    """What :meth:`EngineShard.prepare_checkpoint` took; written by :meth:`commit`."""

    pending: Pending
    snapshots: dict[str, dict]
    sequence: int
    champion: str | None
    shadows: list[str]


class EngineShard:
    """The engines of one (timeframe, shard) of the live service.

    Parameters
    ----------
    timeframe : str
    index, shards : int
        This shard's number and how many the timeframe has.
    folder : path
        The shard's own folder (journals, snapshots, manifest).
    open_model : callable
        ``model_id -> LoadedModel`` (from the registry's artifact).
    sink : object
        Where cold starts read stored bars: ``recent_bars(symbols, before, n)``
        (:class:`regimes.storage.recording.LiveSink`).
    options : ShardOptions
    """

    def __init__(
        self,
        timeframe: str,
        index: int,
        shards: int,
        folder: str | Path,
        open_model: Callable[[str], LoadedModel],
        sink,
        options: ShardOptions | None = None,
    ):
        self.timeframe = check_timeframe_name(timeframe)
        self.index, self.shards = int(index), int(shards)
        self.folder = Path(folder)
        self.open_model = open_model
        self.sink = sink
        self.options = options or ShardOptions()
        self.engines: dict[str, InferenceEngine] = {}
        self.champion: str | None = None
        self.shadows: list[str] = []
        self.windows: dict[str, AnswerWindow] = {}
        self.shadow_errors: dict[str, int] = {}
        self.write_errors = 0
        self._queue: deque[pd.DataFrame] = deque()
        self._pending = Pending()
        self._inflight = Pending()
        self._latest: list[pd.DataFrame] = []
        self.journal = BarJournal(self.folder, 0)
        self.landing = Landing(landing_folder(self.folder))
        self.landing.clear_partials()
        self.restored_bars = 0

    # -- models

    def set_models(self, champion: str | None, shadows=()) -> bool:
        """Run ``champion`` and ``shadows`` from now on; True when anything changed
        (the caller then checkpoints, so a restart replays with the same models)."""
        wanted = [check_model_id(m) for m in dict.fromkeys(s for s in shadows if s != champion)]
        if champion is not None:
            champion = check_model_id(champion)
        if champion == self.champion and wanted == self.shadows:
            return False
        self.drain_shadows()  # every engine at the same bar before roles move
        for model_id in [m for m in (champion, *wanted) if m and m not in self.engines]:
            self.engines[model_id] = self._new_engine(model_id)
        for model_id in [m for m in self.engines if m not in (champion, *wanted)]:
            del self.engines[model_id]
            self.windows.pop(model_id, None)
            log.info("%s shard %d: dropped model %s", self.timeframe, self.index, model_id)
        if champion != self.champion:
            self._latest = []
        self.champion, self.shadows = champion, wanted
        return True

    def _new_engine(self, model_id: str) -> InferenceEngine:
        model = self.open_model(model_id)
        if model.timeframe != self.timeframe:
            raise BadInputError(
                f"model {model_id} is a {model.timeframe} model, not {self.timeframe}"
            )
        self.windows[model_id] = AnswerWindow(self.options.compare_rows)
        return InferenceEngine(model, history=self._history)

    def _history(self, symbols, before, n: int) -> pd.DataFrame:
        """Cold-start bars: the database's, overlaid with this shard's bars not written
        there yet (landed, being landed, pending)."""
        stored = self.sink.recent_bars(symbols, before, n)
        landed = self.landing.bars()
        own = [b for b in (landed, *self._inflight.bars, *self._pending.bars) if len(b)]
        if not own:
            return stored
        mine = pd.concat(own, ignore_index=True)
        mine = mine[mine["symbol"].isin(symbols) & (mine["ts"] < before)]
        frame = pd.concat([stored, mine[stored.columns]], ignore_index=True)
        frame = frame.drop_duplicates(["symbol", "ts"], keep="last").sort_values(["symbol", "ts"])
        return frame.groupby("symbol", sort=False).tail(n).reset_index(drop=True)

    # -- the request path

    def step(self, bars: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The champion's answers to ``bars`` (this shard's symbols, one bar time) and the
        rows it refused; the accepted bars are journaled before this returns."""
        if self.champion is None:
            raise NoChampionError(
                f"no champion model for {self.timeframe}; promote one (`regimes promote`)"
            )
        answers, accepted, rejected = self._step_champion(bars)
        self.journal.append(accepted)
        if len(rejected):
            answers, rejected = self._answer_repeats(answers, rejected)
        return answers, rejected

    def _answer_repeats(self, answers: pd.DataFrame, rejected: pd.DataFrame):
        """A bar sent again after it was answered (a client retrying a batch that failed
        on another shard) gets the answer it got the first time, not a refusal."""
        latest = self.latest()
        if latest.empty:
            return answers, rejected
        known = latest.set_index("symbol")["ts"]
        seen = rejected["symbol"].map(known)
        again = (
            rejected["reason"].str.startswith("duplicate bar")
            & seen.notna()
            & (seen == pd.to_datetime(rejected["ts"], utc=True))
        ).to_numpy()
        if not again.any():
            return answers, rejected
        repeats = latest[latest["symbol"].isin(rejected.loc[again, "symbol"])]
        answers = pd.concat([a for a in (answers, repeats) if len(a)], ignore_index=True)
        return answers, rejected[~again].reset_index(drop=True)

    def _step_champion(self, bars: pd.DataFrame):
        engine = self.engines[self.champion]
        answers = engine.step(bars)
        rejected = engine.last_rejected
        keep = pd.Series(True, index=range(len(bars)))
        keep[rejected["row"].astype(int).tolist()] = False
        accepted = bars.reset_index(drop=True)[keep.to_numpy()]
        accepted = accepted.assign(is_gap=accepted["is_gap"] if "is_gap" in accepted else False)
        if len(accepted):
            self._pending.bars.append(accepted.assign(timeframe=self.timeframe))
            self._record(self.champion, answers)
            self._latest.append(answers)
            if self.shadows:
                self._queue.append(accepted)
        return answers, accepted, rejected

    def _record(self, model_id: str, answers: pd.DataFrame) -> None:
        if len(answers):
            self._pending.answers.append(answers)
            self.windows[model_id].add(answers)

    def step_shadows(self, batches: int = 1) -> int:
        """Step every shadow through up to ``batches`` queued batches; returns how many
        batches were worked. A shadow that fails is counted and logged, never raised."""
        done = 0
        while self._queue and done < batches:
            bars = self._queue.popleft()
            for model_id in self.shadows:
                engine = self.engines[model_id]
                try:
                    self._record(model_id, engine.step(bars))
                except Exception:  # a shadow never fails the service
                    self.shadow_errors[model_id] = self.shadow_errors.get(model_id, 0) + 1
                    log.exception("%s shadow %s failed on a batch", self.timeframe, model_id)
            done += 1
        return done

    def drain_shadows(self) -> int:
        return self.step_shadows(batches=len(self._queue))

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- writing what is pending

    def take_pending(self) -> Pending:
        """Hand the pending bars and answers over for writing: :meth:`write_pending`
        (any thread), then :meth:`settle` (the shard's own thread)."""
        taken, self._pending = self._pending, Pending()
        self._inflight = taken
        return taken

    def write_pending(self, pending: Pending) -> int:
        """Land ``pending``: its bars, then each model's answers (one file each). Changes
        nothing of the shard, so it may run in another thread."""
        if pending.bars:
            self.landing.land_bars(pd.concat(pending.bars, ignore_index=True))
        for answers in _by_model(pending.answers):
            self.landing.land_answers(answers)
        return pending.rows()

    def settle(self, pending: Pending, ok: bool) -> None:
        """After :meth:`write_pending`: done, or back to the front of the queue (the next
        write tries again: at least once)."""
        self._inflight = Pending()
        if not ok:
            self.write_errors += 1
            self._pending = Pending(
                pending.bars + self._pending.bars, pending.answers + self._pending.answers
            )

    def flush(self) -> int:
        """Land everything pending now, in this thread; returns the rows landed."""
        pending = self.take_pending()
        try:
            rows = self.write_pending(pending) if pending else 0
        except BaseException:
            self.settle(pending, ok=False)
            raise
        self.settle(pending, ok=True)
        return rows

    # -- restart record

    def prepare_checkpoint(self) -> Checkpoint:
        """On the request thread: every engine at the same bar, a copy of each, what is
        pending, and a fresh journal (bars from now on belong to the next snapshot)."""
        self.drain_shadows()
        snapshots = {model_id: engine.snapshot() for model_id, engine in self.engines.items()}
        sequence = self.journal.rotate()
        return Checkpoint(
            self.take_pending(), snapshots, sequence, self.champion, list(self.shadows)
        )

    def commit(self, checkpoint: Checkpoint) -> None:
        """Any thread: write the pending work, then the snapshots and the manifest; only
        then are the journals they cover removed. Settle ``checkpoint.pending`` after."""
        self.write_pending(checkpoint.pending)
        files = {}
        for model_id, state in checkpoint.snapshots.items():
            name = f"snapshot-{model_id}-{checkpoint.sequence:08d}.npz"
            write_snapshot(state, self.folder / name)
            files[model_id] = name
        manifest = {
            "timeframe": self.timeframe,
            "shard": self.index,
            "shards": self.shards,
            "sequence": checkpoint.sequence,
            "champion": checkpoint.champion,
            "shadows": checkpoint.shadows,
            "snapshots": files,
        }
        partial = self.folder / (MANIFEST + ".partial")
        partial.write_text(json.dumps(manifest, indent=1))
        os.replace(partial, self.folder / MANIFEST)
        remove_journals(self.folder, checkpoint.sequence)
        for old in self.folder.glob("snapshot-*.npz"):
            if old.name not in files.values():
                old.unlink(missing_ok=True)

    def checkpoint(self) -> None:
        """Both halves at once, in this thread."""
        checkpoint = self.prepare_checkpoint()
        try:
            self.commit(checkpoint)
        except BaseException:
            self.settle(checkpoint.pending, ok=False)
            raise
        self.settle(checkpoint.pending, ok=True)

    def restore(self) -> int:
        """Rebuild from the manifest's snapshots and every journal after them; returns the
        bars stepped again. A shard with no manifest starts empty (its journals, if any,
        are replayed with cold starts, as the first run did)."""
        manifest = self._read_manifest()
        first = 0
        if manifest is not None:
            self._check_manifest(manifest)
            self.set_models(manifest["champion"], manifest["shadows"])
            for model_id, name in manifest["snapshots"].items():
                if model_id in self.engines:
                    try:
                        self.engines[model_id].restore(read_snapshot(self.folder / name))
                    except BadInputError as exc:  # e.g. written by an older release
                        log.warning(
                            "%s shard %d: snapshot of %s not restored (%s); the engine "
                            "starts from cold starts",
                            self.timeframe,
                            self.index,
                            model_id,
                            exc,
                        )
                        self.engines[model_id] = self._new_engine(model_id)
            first = int(manifest["sequence"])
        bars = read_journals(self.folder, first)
        self.journal = BarJournal(self.folder, max(first, _last_sequence(self.folder)) + 1)
        if len(bars) and self.champion is None:
            raise StoreError(f"{self.folder}: journaled bars but no champion in the manifest")
        for _, group in bars.groupby("ts", sort=True):
            self._step_champion(group.reset_index(drop=True))
            self.drain_shadows()
        self.restored_bars = len(bars)
        return len(bars)

    def _read_manifest(self) -> dict | None:
        path = self.folder / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: unreadable shard manifest ({exc})") from None

    def _check_manifest(self, manifest: dict) -> None:
        if (manifest.get("timeframe"), manifest.get("shards")) != (self.timeframe, self.shards):
            raise StoreError(
                f"{self.folder / MANIFEST}: written for {manifest.get('timeframe')} with "
                f"{manifest.get('shards')} shard(s), not {self.timeframe} with {self.shards}; "
                "a changed shard count needs a fresh service folder"
            )

    # -- reading

    def latest(self, symbols=None) -> pd.DataFrame:
        """The champion's newest answer per symbol (all symbols, or those asked)."""
        if not self._latest:
            return pd.DataFrame()
        frame = pd.concat(self._latest, ignore_index=True)
        frame = frame.drop_duplicates("symbol", keep="last").reset_index(drop=True)
        self._latest = [frame]
        return frame if symbols is None else frame[frame["symbol"].isin(list(symbols))]

    def comparison_frames(self) -> dict[str, pd.DataFrame]:
        """The kept answers of every running model (for
        :func:`regimes.live.shadow.compare_answers`)."""
        return {model_id: window.frame() for model_id, window in self.windows.items()}

    def counters(self) -> dict:
        """Per model its engine's counters and its role; the shard's queue and errors."""
        models = {}
        for model_id, engine in self.engines.items():
            counts = engine.counters()
            counts.pop("occupancy_collapse", None)
            role = "champion" if model_id == self.champion else "shadow"
            models[model_id] = {
                **counts,
                "role": role,
                "errors": self.shadow_errors.get(model_id, 0),
            }
        return {
            "timeframe": self.timeframe,
            "shard": self.index,
            "models": models,
            "queued_shadow_batches": len(self._queue),
            "pending_rows": self._pending.rows(),
            "write_errors": self.write_errors,
        }

    def ready(self) -> bool:
        return self.champion is not None and self.champion in self.engines


def _by_model(answers: list[pd.DataFrame]):
    """Pending answer frames grouped per model: one write per model."""
    grouped: dict[str, list] = {}
    for frame in answers:
        grouped.setdefault(str(frame["model_id"].iloc[0]), []).append(frame)
    for frames in grouped.values():
        yield pd.concat(frames, ignore_index=True)


def _last_sequence(folder: Path) -> int:
    from regimes.live.journal import journal_sequences

    sequences = journal_sequences(folder)
    return sequences[-1] if sequences else 0
