"""``python -m regimes`` is the ``regimes`` command."""

import sys

from regimes.app.cli import main

sys.exit(main())
