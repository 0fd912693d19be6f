"""Jupyter views of a resume (ipywidgets, Bokeh figures through jupyter_bokeh), built on the
public API of ``lab`` only.  ``ResumeLab(...)`` composes them; ``setup()`` loads BokehJS
inline into the notebook."""
from .cpu_cards import CpuCard, CpuCards
from .lab_view import ResumeLab, setup
from .memory_map import MemoryMapView
from .stepper import TARGETS, Stepper
from .timeline import TimelineView
from .walk_view import WalkRow, WalkView

__all__ = ["CpuCard", "CpuCards", "MemoryMapView", "ResumeLab", "Stepper", "TARGETS", "TimelineView",
           "WalkRow", "WalkView", "setup"]
