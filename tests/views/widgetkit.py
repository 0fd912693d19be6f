"""Helpers for the widget tests (a module of its own: ``conftest`` is not importable by name
when several conftest.py files exist)."""
from __future__ import annotations

FAULT_ADDRESS = "ffff8800ba800010"


def error_text(box) -> str:  # noqa: ANN001 - a widgets._common.MessageBox
    """The error a message box shows (empty when it shows none)."""
    return box.value if "lab-error" in box._dom_classes else ""
