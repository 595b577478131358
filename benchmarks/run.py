"""Run every benchmark in this folder and write BENCHMARKS.md.

Each benchmark runs the anchor it is compared against in the same run and reports the
ratio, because these machines are noisy. Usage: ``make bench`` (or
``python benchmarks/run.py [NAME ...]``).

Sections in ``ON_REQUEST`` run only when named (``python benchmarks/run.py scaling``):
a run without names keeps their section of BENCHMARKS.md as it was.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Too long for every `make bench`: the 2-node backfill took 47 min and ~5 GB of /tmp here.
ON_REQUEST = {"scaling"}


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _sections(text: str) -> dict[str, str]:
    """The ``## name: ...`` sections of an existing BENCHMARKS.md, by name."""
    found: dict[str, str] = {}
    parts = text.split("\n## ")[1:]
    for part in parts:
        name = part.split(":", 1)[0].strip()
        found[name] = ("## " + part).rstrip() + "\n"
    return found


def main(argv: list[str]) -> int:
    wanted = set(argv)
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}"
    sections = {}
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if (wanted and name not in wanted) or (not wanted and name in ON_REQUEST):
            continue
        print(f"== {path.stem}", file=sys.stderr, flush=True)
        module = _load(path)
        sections[name] = module.run().rstrip() + f"\n\n_measured {stamp}_\n"
    target = ROOT / "BENCHMARKS.md"
    if not wanted and target.exists():
        # The sections that run only when named are kept from the file as they were.
        old = _sections(target.read_text())
        sections.update({name: old[name] for name in ON_REQUEST if name in old})
        sections = dict(sorted(sections.items()))
    elif wanted and target.exists():
        # A partial run replaces its own sections and keeps the others as they were.
        old = target.read_text()
        dated = re.search(r"^- date: (.+)$", old, flags=re.MULTILINE)
        kept = {
            name: text if "_measured " in text or not dated else f"{text}\n_measured {dated[1]}_\n"
            for name, text in _sections(old).items()
        }
        kept.update(sections)
        sections = dict(sorted(kept.items()))
    header = [
        "# Benchmarks",
        "",
        "Made by `make bench` (`benchmarks/run.py`; `python benchmarks/run.py NAME ...`",
        "re-runs some sections and keeps the others). Every figure was measured in the run",
        "that wrote its section (dated at its end); each benchmark runs its anchor in the",
        "same run and reports the ratio. `scaling` (the backfill on a 2-node Ray cluster,",
        "~45 min) runs only when named: `python benchmarks/run.py scaling`.",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "",
    ]
    text = "\n".join(header) + "\n" + "\n".join(s.rstrip() + "\n" for s in sections.values())
    target.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
