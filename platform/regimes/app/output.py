"""What the CLI and the demo show a person: summary lines on stderr, progress bars,
tables, and errors as one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from regimes.app.progress import Tick


def say(message: str = "") -> None:
    """A line of the human summary (stderr)."""
    print(message, file=sys.stderr, flush=True)


def _bar_disabled() -> bool | None:
    # None lets tqdm hide the bar when stderr is not a terminal; REGIMES_PROGRESS=1 forces it.
    return False if os.environ.get("REGIMES_PROGRESS") == "1" else None


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Tick]:
    """A :data:`regimes.app.progress.Progress`: a bar on stderr (hidden when stderr is
    not a terminal, unless ``REGIMES_PROGRESS=1``)."""
    from tqdm.auto import tqdm

    with tqdm(
        total=total,
        desc=description,
        file=sys.stderr,
        disable=_bar_disabled(),
        leave=True,
        dynamic_ncols=True,
    ) as bar:
        yield bar.update


def format_table(frame) -> str:
    return frame.to_string(index=False)


def one_line(exc: BaseException) -> str:
    """An error message on one line (a multi-line message joined with `` | ``)."""
    return " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
