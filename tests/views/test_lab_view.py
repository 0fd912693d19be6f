"""ResumeLab: the composed view and its agreement with the model."""
from __future__ import annotations

import subprocess
import sys

import widgets

from widgetkit import FAULT_ADDRESS


def test_composition(workshop_lab: widgets.ResumeLab) -> None:
    lab = workshop_lab
    assert "lab-root" in lab._dom_classes
    for name in ("stepper", "cards", "walk", "memmap", "timeline", "resume"):
        assert getattr(lab, name) is not None
    assert lab.resume is lab.stepper.resume
    assert lab.resume.config.preset == "workshop" and lab.resume.config.fix == "mwait"
    assert lab.check() == []


def test_kwargs_go_to_resume() -> None:
    lab = widgets.ResumeLab(preset="workshop", fix="hlt", seed=3, jitter=0.0)
    c = lab.resume.config
    assert (c.fix, c.seed, c.jitter) == ("hlt", 3, 0.0)


def test_step_to_next_fault_on_the_report_machine(faulted_lab: widgets.ResumeLab) -> None:
    lab = faulted_lab
    r = lab.resume
    assert r.outcome == "panic"
    assert r.faults()[0]["address"] == "0x" + FAULT_ADDRESS
    faulted = [c for c in lab.cards.cards if "lab-cpu-faulted" in c._dom_classes]
    assert faulted and FAULT_ADDRESS in faulted[0].oops_html and "<pre" in faulted[0].oops_html
    assert '<tr class="lab-walk-row' in lab.walk.table.value
    assert "lab-walk-fault" in lab.walk.table.value
    assert "lab-walk-fault" in lab.walk.table.value.split('<tr class="lab-walk-row')[-1].split(">")[0]
    assert lab.check() == []


def test_check_notices_a_view_that_lags() -> None:
    lab = widgets.ResumeLab(preset="workshop", fix="mwait")
    for _ in range(5):
        lab.resume.step()  # behind the views' back
    lab.resume.run("copy")
    lab.resume.step()
    lab.resume.step()
    assert lab.check() != []
    lab.stepper.step_button.click()
    assert lab.check() == []


def test_setup_outside_a_kernel_does_nothing() -> None:
    assert widgets.setup() is False


def test_setup_in_a_kernel_loads_bokehjs_inline() -> None:
    code = r"""
import json, sys
from unittest import mock
import IPython
published = []
class FakeKernel: pass
class FakeShell:
    kernel = FakeKernel()
with mock.patch.object(IPython, "get_ipython", lambda: FakeShell()), \
     mock.patch("bokeh.io.notebook.publish_display_data", lambda *a, **k: published.append((a, k))):
    import widgets
    assert widgets.setup() is True
blob = json.dumps(published, default=str)
print("cdn.bokeh.org" in blob, "Bokeh" in blob, len(blob) > 500_000, "__labBokehPatches" in blob)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True", "True"], out.stdout
