"""Campaigns on a real dask.distributed LocalCluster (2 worker processes): the same records,
record by record, as in this process; and the CLI's --dask."""
from __future__ import annotations

import json

import pytest

from lab import cli
from lab.campaign import dask_executor, sweep
from lab.compare import compare
from lab.scenario import Config

distributed = pytest.importorskip("distributed", reason="dask[distributed] is in the test extra (make test installs it)")

FIXES = ["mwait", "hlt"]
SEEDS = range(4)


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as lc, \
            Client(lc) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        yield client


@pytest.mark.timeout(120)
def test_dask_sweep_equals_in_process_record_by_record(cluster):
    here = sweep(Config.from_preset("workshop"), FIXES, SEEDS, progress=False)
    there = sweep(Config.from_preset("workshop"), FIXES, SEEDS, cluster.get_executor(), progress=False)
    assert len(there) == len(here) == 8
    for a, b in zip(here, there):
        assert a == b
    assert any(r["outcome"] != "resumed" for r in there)  # mwait fails on some workshop seed
    workers = {w["id"] for w in cluster.scheduler_info()["workers"].values()}
    assert len(workers) == 2


@pytest.mark.timeout(120)
def test_dask_compare_equals_in_process(cluster):
    here = compare("workshop", ["hlt"], ["copy stores", "stray NMI"], range(2), progress=False)
    there = compare("workshop", ["hlt"], ["copy stores", "stray NMI"], range(2), executor=cluster.get_executor(),
                    progress=False)
    assert here.drop(columns=["settings"]).equals(there.drop(columns=["settings"]))
    assert list(here["settings"]) == list(there["settings"])


@pytest.mark.timeout(120)
def test_cli_dask_local(capsys):
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0-1", "--dask", "local:1",
                     "--json"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["fix"], r["seed"], r["outcome"]) for r in recs] == [("hlt", 0, "resumed"), ("hlt", 1, "resumed")]


@pytest.mark.parametrize("spec,needle", [("local:0", "local:N with N from 1 to 64"), ("local:x", "local:N"),
                                         ("tcp://127.0.0.1:1", "cannot reach a dask scheduler")])
def test_cli_bad_dask_spec(spec, needle, capsys):
    assert cli.main(["sweep", "--preset", "workshop", "--fix", "hlt", "--seeds", "0", "--dask", spec]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_dask_and_jobs_together_are_refused(capsys):
    assert cli.main(["sweep", "--fix", "hlt", "--seeds", "0", "--dask", "local:1", "--jobs", "2"]) == 2
    assert "one of the two" in capsys.readouterr().err


def test_dask_executor_context_refuses_an_empty_address():
    with pytest.raises(ValueError, match="--dask"):
        with dask_executor(" "):
            pass
