"""Fixtures of the scenario tests: one cache of analysed runs for the whole session (the seed
sweep and the tests that explain single seeds share their runs)."""
from __future__ import annotations

import pytest

from scenario_kit import RecordCache


@pytest.fixture(scope="session")
def records() -> RecordCache:
    return RecordCache()
