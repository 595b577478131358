"""``python -m regimes`` is the ``regimes`` command."""

import sys

from regimes.cli import main

sys.exit(main())
