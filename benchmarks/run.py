"""Run every benchmark in this folder and write BENCHMARKS.md.

Each benchmark runs the anchor it is compared against in the same run and reports the
ratio, because these machines are noisy. Usage: ``make bench`` (or
``python benchmarks/run.py [NAME ...]``).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    wanted = set(argv)
    sections = []
    for path in sorted(HERE.glob("bench_*.py")):
        if wanted and path.stem.removeprefix("bench_") not in wanted:
            continue
        print(f"== {path.stem}", file=sys.stderr, flush=True)
        module = _load(path)
        sections.append(module.run())
    header = [
        "# Benchmarks",
        "",
        "Made by `make bench` (`benchmarks/run.py`). Every figure was measured in the run that",
        "wrote this file; each benchmark runs its anchor in the same run and reports the ratio.",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "",
    ]
    text = "\n".join(header + ["\n\n".join(sections)]) + "\n"
    (ROOT / "BENCHMARKS.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
