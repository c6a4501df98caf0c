"""``python -m sesemi.sweep_report <sweep dir | journal file | database URL>``: see :mod:`sesemi.sweep.report`."""

from __future__ import annotations

import sys

from sesemi.sweep.report import main

if __name__ == "__main__":
    sys.exit(main())
