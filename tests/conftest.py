"""Shared test setup: makes ``tests/hwkit.py`` importable as ``hwkit`` and offers a ``rig``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import hwkit  # noqa: E402


@pytest.fixture
def rig() -> hwkit.Rig:
    """A 2-CPU, 64 MiB machine with direct map, text, IDT and stacks (see tests/hwkit.py)."""
    return hwkit.Rig()
