"""``python -m studies.ffn_capitals``: see :mod:`studies.ffn_capitals.cli`."""

import sys

from studies.ffn_capitals.cli import main

sys.exit(main())
