"""``python -m studies.dictionaries``: see :mod:`studies.dictionaries.cli`."""

import sys

from studies.dictionaries.cli import main

sys.exit(main())
