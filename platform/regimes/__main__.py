"""``python -m regimes`` is the ``regimes`` command."""

from regimes.app.cli import entry_point

entry_point()
