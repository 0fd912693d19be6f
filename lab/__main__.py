import os
import sys

from .cli import main

try:
    sys.exit(main())
except BrokenPipeError:  # e.g. `python -m lab run | head`: the reader left, nothing to report
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
