"""``python -m coord``: the ``coord`` command (``coord.cli``)."""

import sys

from coord.cli import main

sys.exit(main())
