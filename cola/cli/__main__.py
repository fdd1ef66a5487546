"""``python -m cola.cli``."""

import sys

from . import main

sys.exit(main())
