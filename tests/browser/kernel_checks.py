"""Python the browser test types into new cells of the notebook, to look at
the kernel's side of the widgets. Each prints one line: a marker and JSON.

They run in the notebook's namespace (`exec` at top level of a cell), so they
see the notebook's `lab` (a widgets.ResumeLab). They are written defensively:
a name that is missing shows up in the JSON, it does not raise.
"""

HOOK_MARKER = "BROWSER-HOOK"
CHECK_MARKER = "BROWSER-CHECK"

# Record every exception a widget callback raises from now on. ipywidgets
# catches those and calls showtraceback() (JupyterLab shows the traceback in
# the log console, not in a cell); errors in comm messages (a trait set from
# the browser, a Bokeh event) are logged by the comm manager.
HOOK = r'''
import logging as _bt_logging, sys as _bt_sys
_bt_ip = get_ipython()
_browser_errors = []
if not getattr(_bt_ip, "_browser_test_hooked", False):
    _bt_show = _bt_ip.showtraceback
    def _bt_record(*args, **kwargs):
        _browser_errors.append("callback: " + repr(_bt_sys.exc_info()[1]))
        return _bt_show(*args, **kwargs)
    _bt_ip.showtraceback = _bt_record
    class _BtHandler(_bt_logging.Handler):
        def emit(self, record):
            _browser_errors.append(f"log {record.name}: {record.getMessage()} {record.exc_info and repr(record.exc_info[1])}")
    _bt_logging.getLogger().addHandler(_BtHandler(level=_bt_logging.ERROR))
    _bt_ip._browser_test_hooked = True
print("BROWSER-HOOK", "ok")
'''

# After the clicks: the errors recorded since HOOK ran, and whether every
# Bokeh figure's data (ColumnDataSource in the kernel) matches the model.
# The comparison is the widgets' own: ResumeLab.check() returns a list of
# mismatch strings, empty when each view (CPU cards, walk, and the Bokeh
# memory map and timeline) shows what lab.resume says. On top of that, every
# ColumnDataSource of every BokehModel must have columns of equal length.
CHECK = r'''
import json as _bt_json
_bt = {"errors": list(globals().get("_browser_errors", [])), "missing": [], "mismatches": []}
_bt_lab = globals().get("lab")
if _bt_lab is None:
    _bt["missing"].append("lab")
else:
    _bt["lab_type"] = type(_bt_lab).__name__
    for _bt_name in ("resume", "memmap", "timeline", "cards", "walk", "stepper"):
        if not hasattr(_bt_lab, _bt_name):
            _bt["missing"].append("lab." + _bt_name)
    _bt_check = getattr(_bt_lab, "check", None)
    if callable(_bt_check):
        try:
            _bt["mismatches"] = [str(m) for m in (_bt_check() or [])]
        except Exception as _bt_error:
            _bt["mismatches"].append("lab.check() raised " + repr(_bt_error))
    else:
        _bt["missing"].append("lab.check")
    # Every Bokeh ColumnDataSource the lab's figures hold, with its column
    # lengths, and whether all columns of a source have the same length.
    try:
        from jupyter_bokeh.widgets import BokehModel as _BtBM
        from bokeh.models import ColumnDataSource as _BtCDS
        import ipywidgets as _bt_w
        _bt_sources = {}
        for _bt_widget in list(_bt_w.Widget.widgets.values()):
            if isinstance(_bt_widget, _BtBM):
                for _bt_ref in _bt_widget._model.references():
                    if isinstance(_bt_ref, _BtCDS):
                        _bt_lens = {k: len(v) for k, v in _bt_ref.data.items()}
                        _bt_sources[f"{_bt_ref.name or '?'}#{_bt_ref.id}"] = _bt_lens
                        if len(set(_bt_lens.values())) > 1:
                            _bt["mismatches"].append(f"source {_bt_ref.name or _bt_ref.id}: ragged columns {_bt_lens}")
        _bt["sources"] = _bt_sources
    except Exception as _bt_error:
        _bt["mismatches"].append("listing Bokeh sources raised " + repr(_bt_error))
    # The timeline's sources as the kernel has them (the test compares the page's BokehJS
    # documents with them: a patch the page dropped or misread shows here), and whether each
    # of the lab's Bokeh panes was told by the page that it takes one-message patches.
    try:
        from bokeh.models import ColumnDataSource as _BtCDS2
        _bt_tl = _bt_lab.timeline
        _bt["timeline_sources"] = {_bt_ref.id: {"name": _bt_ref.name, "data": {k: list(v) for k, v in _bt_ref.data.items()}}
                                   for _bt_ref in _bt_tl.bokeh._model.references() if isinstance(_bt_ref, _BtCDS2)}
        # the current segments' shared right edge: one value on each shown quad of the open layer
        _bt["timeline_right"] = {_bt_r.glyph.id: _bt_r.glyph.right for _bt_r in _bt_tl.layers["open"].quads
                                 if _bt_r.visible}
        _bt["one_message"] = {"timeline": _bt_tl.bokeh.one_message, "progress": _bt_tl.progress_bokeh.one_message,
                              "memmap": _bt_lab.memmap.bokeh.one_message}
    except Exception as _bt_error:
        _bt["mismatches"].append("reading the timeline's sources raised " + repr(_bt_error))
    _bt["step_requests"] = getattr(getattr(_bt_lab, "stepper", None), "requests", None)
    _bt_resume = getattr(_bt_lab, "resume", None)
    if _bt_resume is not None:
        try:
            _bt["now"] = _bt_resume.now
            _bt["phase"] = _bt_resume.phase
            _bt["events"] = len(_bt_resume.events)
        except Exception as _bt_error:
            _bt["mismatches"].append("reading lab.resume raised " + repr(_bt_error))
print("BROWSER-CHECK", _bt_json.dumps(_bt, default=str))
'''
