"""The copy's run finder: its plain-Python path (a few pages between two other actors' events)
and its numpy path (a long bulk step) must cut every list of pbes at the same places."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.hw.memory import _stride_runs_numpy, _stride_runs_small, stride_runs

steps = st.sampled_from([1, -1, 1, -1, 0, 2, 5, -3])


@st.composite
def frame_lists(draw):  # noqa: ANN001, ANN201
    n = draw(st.integers(2, 80))
    src = [draw(st.integers(0, 1000))]
    dst = [draw(st.integers(0, 1000))]
    for _ in range(n - 1):
        src.append(src[-1] + draw(steps))
        dst.append(dst[-1] + draw(steps))
    return src, dst


@settings(max_examples=400, deadline=None)
@given(frame_lists())
def test_both_paths_cut_at_the_same_places(lists):
    src, dst = lists
    small = _stride_runs_small(src, dst)
    assert small == _stride_runs_numpy(np.array(src), np.array(dst))
    assert stride_runs(np.array(src), np.array(dst)) == small


@settings(max_examples=200, deadline=None)
@given(frame_lists())
def test_every_run_moves_by_one_constant_step(lists):
    src, dst = lists
    edges = stride_runs(np.array(src), np.array(dst))
    assert edges[0] == 0 and edges[-1] == len(src) and edges == sorted(set(edges))
    for a, b in zip(edges, edges[1:]):
        steps_in_run = {(src[k + 1] - src[k], dst[k + 1] - dst[k]) for k in range(a, b - 1)}
        assert len(steps_in_run) <= 1
        assert all(abs(x) == 1 and abs(y) == 1 for x, y in steps_in_run)
