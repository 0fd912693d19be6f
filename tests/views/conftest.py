"""Fixtures for the widget tests: views built on the small ``workshop`` machine (fast) and on
the ``report-2016`` machine (the one that faults at 0xffff8800ba800010 with mwait).  (This
folder is ``views``, not ``widgets``: with ``tests/`` on sys.path a folder of that name would
shadow the package under test.)"""
from __future__ import annotations

import pytest

import widgets


@pytest.fixture
def workshop_lab() -> widgets.ResumeLab:
    return widgets.ResumeLab(preset="workshop", fix="mwait", seed=0)


@pytest.fixture
def report_lab() -> widgets.ResumeLab:
    return widgets.ResumeLab(preset="report-2016", fix="mwait", seed=0)


@pytest.fixture(scope="module")
def faulted_lab() -> widgets.ResumeLab:
    """report-2016 with mwait after "Step to next fault" (shared: read it, do not step it)."""
    lab = widgets.ResumeLab(preset="report-2016", fix="mwait", seed=0)
    lab.stepper.fault_button.click()
    return lab
