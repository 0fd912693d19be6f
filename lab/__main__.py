"""``python -m lab``: lab.cli.main does the work (Ctrl-C -> 130, closed stdout -> quiet 0, full
stdout -> 2; the `hibernation-lab` entry point calls the same main)."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the lab is still importing
    print("python -m lab: interrupted (Ctrl-C)", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
