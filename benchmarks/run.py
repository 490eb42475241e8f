"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--json FILE] ...``.

Also runnable as ``python benchmarks/run.py``.  See ``--help``, and
``docs/benchmarks.rst`` for what is measured and how to read the results.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Started as a script: make the ``benchmarks`` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._main import main

if __name__ == "__main__":
    sys.exit(main())
