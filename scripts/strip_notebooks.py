"""Strip notebook outputs except the cells nbval checks (marked ``# NBVAL_CHECK_OUTPUT``).

    python scripts/strip_notebooks.py notebooks/*.ipynb          # rewrite in place
    python scripts/strip_notebooks.py --execute notebooks/00-welcome.ipynb
        # run it first (nbclient), so the checked cells keep fresh, deterministic outputs
"""
from __future__ import annotations

import argparse
import sys

import nbformat


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "NBVAL_CHECK_OUTPUT" in cell.source:
            for out in cell.get("outputs", []):
                out.pop("execution_count", None) if out.get("output_type") != "execute_result" else None
            continue
        cell.outputs = []
        cell.execution_count = None
    nb.metadata.pop("widgets", None)
    return nb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+")
    p.add_argument("--execute", action="store_true", help="execute each notebook before stripping")
    args = p.parse_args(argv)
    for path in args.paths:
        nb = nbformat.read(path, as_version=4)
        if args.execute:
            from nbclient import NotebookClient
            NotebookClient(nb, timeout=120, kernel_name="python3").execute()
        nbformat.write(strip(nb), path)
        print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
