"""``python -m engine.cli``: the same as the ``dirtylog`` command."""

import sys

from engine.cli.main import main

sys.exit(main())
