"""``python -m nasprune.cli``: the same as the ``nasprune`` command."""

import sys

from nasprune.cli import main

sys.exit(main())
