"""A shard's landing: the bars and answers it accepted, on local disk, until the service's
writer has put them where they belong (database ``bars``, ``current_states``, the Delta
state store).

Why: a shard that wrote them itself spent more CPU on the writes than on answering
(about 25 ms of Python per 1,000 bars into the database, and every Delta MERGE writes a
file per symbol touched, about 1.5 s per 1,000 symbols whatever the rows), in threads
of the process that serves requests (the GIL). So a shard only lands them here, at each
flush (one Arrow file per kind and model, written whole and then renamed:
milliseconds), and a separate, lower-priority process works the landings
(:class:`LandingWriter`): bars into the database and champion answers into
``current_states`` each flush interval, and every answer into the state store in large
MERGEs, each of which takes everything landed since the last.

Files (``<shard folder>/landing/``), numbered in landing order:

- ``bars-<n>.arrow``: accepted bars, removed once in the database;
- ``answers-<n>-<model_id>.arrow``: a model's answers, renamed
  ``published-<n>-<model_id>.arrow`` once mirrored into ``current_states`` (champion
  answers only are), removed once merged into the state store.

A file is renamed or removed only after its write committed, so a crash anywhere leaves
it to be written again: every write is an idempotent upsert or MERGE (at least once,
never twice).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from regimes.errors import StoreError
from regimes.paths import check_model_id

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(bars|answers|published)-(\d{10})(?:-(.+))?\.arrow$")
DEFAULT_ROWS_PER_WRITE = 500_000


def answer_width(frame: pd.DataFrame) -> tuple[int, int]:
    """(d, K) of an answer frame: its ``z_..`` and ``p_..`` columns."""
    d = sum(1 for c in frame.columns if c.startswith("z_"))
    K = sum(1 for c in frame.columns if c.startswith("p_"))
    return d, K


class Landing:
    """The landing folder of one shard (see the module docstring).

    Parameters
    ----------
    folder : path
        The landing folder (created at the first landing).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()
        found = self._files()
        self._next = max((n for _, n, _, _ in found), default=-1) + 1

    def _files(self, kind: str | None = None) -> list[tuple[str, int, str | None, Path]]:
        """(kind, number, model_id, path) of the landed files, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = _NAME.match(path.name)
            if match and kind in (None, match.group(1)):
                found.append((match.group(1), int(match.group(2)), match.group(3), path))
        return sorted(found, key=lambda f: f[1])

    # -- the shard's side

    def clear_partials(self) -> None:
        """Remove files a crash cut short (never renamed); only the shard that lands here
        may call this, before it lands anything."""
        if self.folder.is_dir():
            for partial in self.folder.glob("*.partial"):
                partial.unlink(missing_ok=True)

    def land_bars(self, bars: pd.DataFrame) -> int:
        """Land accepted bars (any thread); returns the rows landed."""
        return self._land(bars, "bars", None)

    def land_answers(self, answers: pd.DataFrame) -> int:
        """Land one model's answers (any thread); returns the rows landed."""
        if answers.empty:
            return 0
        return self._land(answers, "answers", check_model_id(str(answers["model_id"].iloc[0])))

    def _land(self, frame: pd.DataFrame, kind: str, model_id: str | None) -> int:
        if frame.empty:
            return 0
        with self._lock:
            number, self._next = self._next, self._next + 1
        name = f"{kind}-{number:010d}" + (f"-{model_id}" if model_id else "") + ".arrow"
        table = pa.Table.from_pandas(frame, preserve_index=False)
        partial = self.folder / (name + ".partial")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            os.replace(partial, self.folder / name)
        except OSError as exc:
            raise StoreError(f"landing {self.folder}: cannot write {name} ({exc})") from None
        return len(frame)

    def bars(self) -> pd.DataFrame:
        """The landed bars not in the database yet (for cold starts), oldest first."""
        frames = [f for f in (_read(p) for _, _, _, p in self._files("bars")) if f is not None]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- the writer's side

    def backlog(self) -> dict[str, int]:
        """Landed files per kind (bars, answers, published) not written yet."""
        counts = {"bars": 0, "answers": 0, "published": 0}
        for kind, _, _, _ in self._files():
            counts[kind] += 1
        return counts

    def write_bars(self, write: Callable[[pd.DataFrame], int], rows: int) -> int:
        """Every landed bar file through ``write(bars)`` (up to ``rows`` rows a call, a key
        landed twice keeping its newest row), each removed once its call returned."""
        files = [(p, None) for _, _, _, p in self._files("bars")]
        return _work(files, rows, ["symbol", "timeframe", "ts"], write, _remove)

    def publish(self, publish: Callable[[pd.DataFrame], object], rows: int) -> int:
        """Every ``answers-`` file through ``publish(answers)`` (``current_states``), then
        renamed ``published-``; returns the rows handed over."""
        done = 0

        def handed(frame: pd.DataFrame) -> int:
            publish(frame)
            return len(frame)

        for paths in self._per_model("answers").values():
            files = [(p, p.with_name(p.name.replace("answers-", "published-", 1))) for p in paths]
            done += _work(files, rows, ["symbol", "ts"], handed, _rename)
        return done

    def store(self, write: Callable[[pd.DataFrame, int, int], int], rows: int) -> int:
        """Every ``published-`` file through ``write(answers, d, K)`` (the state store's
        MERGE, one call per model and up to ``rows`` rows), each removed once its call
        returned; returns the rows merged."""
        done = 0

        def merged(frame: pd.DataFrame) -> int:
            return write(frame, *answer_width(frame))

        for paths in self._per_model("published").values():
            done += _work([(p, None) for p in paths], rows, ["symbol", "ts"], merged, _remove)
        return done

    def _per_model(self, kind: str) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {}
        for _, _, model_id, path in self._files(kind):
            out.setdefault(model_id, []).append(path)
        return out


def _read(path: Path) -> pd.DataFrame | None:
    """A landed file, or None when it is gone (written meanwhile)."""
    try:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all().to_pandas()
    except FileNotFoundError:
        return None
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"landing {path}: unreadable ({exc})") from None


def _remove(path: Path, _target) -> None:
    path.unlink(missing_ok=True)


def _rename(path: Path, target: Path) -> None:
    os.replace(path, target)


def _work(files, rows: int, key: list[str], write, settle) -> int:
    """``files`` ((path, target) oldest first) in chunks of about ``rows`` rows through
    ``write``, each chunk's files settled only after its write returned."""
    done, chunk, count = 0, [], 0
    for index, (path, target) in enumerate(files):
        frame = _read(path)
        if frame is not None:
            chunk.append((path, target, frame))
            count += len(frame)
        if chunk and (count >= rows or index == len(files) - 1):
            joined = pd.concat([f for _, _, f in chunk], ignore_index=True)
            joined = joined.drop_duplicates(key, keep="last").reset_index(drop=True)
            done += write(joined)
            for done_path, done_target, _ in chunk:
                settle(done_path, done_target)
            chunk, count = [], 0
    return done


class LandingWriter:
    """Works the landings of a service's shards: bars into the database, champion answers
    into ``current_states`` (:meth:`publish`), every answer into the state store
    (:meth:`store`).

    Parameters
    ----------
    landings : dict
        Per timeframe, the :class:`Landing` of each of its shards.
    sinks : dict
        Per timeframe, its :class:`regimes.storage.recording.LiveSink`.
    rows : int
        Most rows per database write or MERGE.
    """

    def __init__(self, landings: dict[str, list[Landing]], sinks: dict, rows: int):
        self.landings, self.sinks, self.rows = landings, sinks, rows
        self.written = {"bars": 0, "published": 0, "stored": 0}

    def publish(self) -> int:
        """Bars into the database, then champion answers into ``current_states``."""
        done = 0
        for timeframe, landings in self.landings.items():
            sink = self.sinks[timeframe]
            for landing in landings:
                bars = landing.write_bars(sink.write_bars, self.rows)
                answers = landing.publish(sink.publish, self.rows)
                self.written["bars"] += bars
                self.written["published"] += answers
                done += bars + answers
        return done

    def store(self) -> int:
        """Published answers into the state store."""
        done = 0
        for timeframe, landings in self.landings.items():
            for landing in landings:
                done += landing.store(self.sinks[timeframe].store_answers, self.rows)
        self.written["stored"] += done
        return done

    def backlog(self) -> dict[str, int]:
        """Landed files waiting, per kind, over every shard."""
        total = {"bars": 0, "answers": 0, "published": 0}
        for landings in self.landings.values():
            for landing in landings:
                for kind, n in landing.backlog().items():
                    total[kind] += n
        return total
