"""``python -m orsim``: the same as the ``orsim`` command."""

from __future__ import annotations

import sys

from orsim.cli import program

sys.exit(program())
