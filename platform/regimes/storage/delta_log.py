"""Integrity of a Delta table's ``_delta_log``: every commit since the newest checkpoint is
there, each line a JSON action, and MERGE/OPTIMIZE commits hold as many add/remove actions
as their own metrics announce. delta-rs itself reads an empty or cut-off commit file
without complaint; these checks turn one into a :class:`~regimes.errors.StoreError`
naming the file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from regimes.errors import StoreError
from regimes.storage._store_errors import failure_reason

_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT_FILE = re.compile(r"^(\d{20})\.checkpoint(?:\..+)?\.parquet$")
# Operations whose commitInfo announces how many add/remove actions follow.
_FILE_METRICS = {
    "MERGE": ("num_target_files_added", "num_target_files_removed"),
    "OPTIMIZE": ("numFilesAdded", "numFilesRemoved"),
}
# Commit files are immutable once written: (log folder, file name) -> size already checked.
_checked_commits: dict[tuple[str, str], int] = {}


def check_delta_log(
    root: str, filesystem, what: str, reason: Callable[[BaseException], str] = failure_reason
) -> None:
    """Refuse a log with a missing, empty or cut-off commit since the last checkpoint.

    ``reason`` turns a failure to list or read the log into the message's one line (the
    caller's adds what to check on its store)."""
    import pyarrow.fs as pa_fs

    log = f"{root.rstrip('/')}/_delta_log"
    try:
        infos = filesystem.get_file_info(pa_fs.FileSelector("_delta_log"))
    except Exception as exc:
        raise StoreError(f"{what} log {log} cannot be listed: {reason(exc)}") from None
    commits: dict[int, tuple[str, int]] = {}
    checkpoints: set[int] = set()
    for info in infos:
        if match := _COMMIT_FILE.match(info.base_name):
            commits[int(match.group(1))] = (info.base_name, info.size)
        elif match := _CHECKPOINT_FILE.match(info.base_name):
            checkpoints.add(int(match.group(1)))
    first = max(checkpoints) + 1 if checkpoints else 0
    newest = max(commits, default=first - 1)
    missing = [v for v in range(first, newest + 1) if v not in commits]
    if missing or newest < 0:
        names = ", ".join(f"{v:020d}.json" for v in missing[:5]) or f"{0:020d}.json"
        raise StoreError(
            f"{what} log {log} is missing commit file(s) {names}: the table "
            "cannot be read safely; restore the log from a backup"
        )
    for version in range(first, newest + 1):
        name, size = commits[version]
        if _checked_commits.get((log, name)) == size:
            continue
        try:
            with filesystem.open_input_stream(f"_delta_log/{name}") as stream:
                data = stream.read()
        except Exception as exc:
            raise StoreError(f"{log}/{name} cannot be read: {reason(exc)}") from None
        _check_commit(data, f"{log}/{name}")
        _checked_commits[(log, name)] = size


def _check_commit(data: bytes, path: str) -> None:
    """One commit file: JSON actions, and as many adds/removes as its metrics announce."""
    if not data.strip():
        raise StoreError(f"state table commit {path} is empty: the log is damaged")
    counts: dict[str, int] = {}
    info: dict = {}
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError:
            raise StoreError(
                f"state table commit {path}, line {number}: not valid JSON (truncated or "
                "corrupted): the log is damaged"
            ) from None
        if not isinstance(action, dict) or len(action) != 1:
            raise StoreError(f"state table commit {path}, line {number}: not a Delta action")
        kind = next(iter(action))
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "commitInfo" and isinstance(action[kind], dict):
            info = action[kind]
    operation = info.get("operation")
    metrics = info.get("operationMetrics") or {}
    announced = _FILE_METRICS.get(operation)
    if announced and all(key in metrics for key in announced):
        found = (counts.get("add", 0), counts.get("remove", 0))
        expected = tuple(int(metrics[key]) for key in announced)
        if found != expected:
            raise StoreError(
                f"state table commit {path}: {operation} announces {expected[0]} added and "
                f"{expected[1]} removed files but holds {found[0]} and {found[1]}: the file "
                "was cut short; the log is damaged"
            )
    if operation == "CREATE TABLE" and not (counts.get("protocol") and counts.get("metaData")):
        raise StoreError(f"state table commit {path}: CREATE TABLE without protocol or metadata")
