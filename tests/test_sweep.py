"""``nspec sweep`` / ``nspec.sweep`` on a local Ray (runtime/sweep.py).

Every table is checked against serial runs computed here (``nspec.load(...).run(seed=...)``): the
outputs of each trial bit for bit, its metric against a count of those spikes.  One Ray is started
per test module (and per pytest-xdist worker); its workers keep their TVM libraries in a cache
folder of their own, so a worker that runs a TVM trial without compiling did get the library
through the object store.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

import nspec
from nspec.cli import main
from nspec.runtime.sweep import (Metric, SweepError, Trial, expand, parse_grid, parse_metric, parse_seeds, si_value,
                                 split_values, sweep, variant_key)

CUBA = Path(__file__).resolve().parents[1] / "specs" / "cuba.nspec"
STEPS = 400
N_NEURONS, DT = 4000, 1e-4


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray of two CPUs whose workers have a TVM cache folder of their own (returned)."""
    worker_cache = tmp_path_factory.mktemp("worker-cache")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"NSPEC_CACHE_DIR": str(worker_cache)}})
    yield worker_cache
    ray.shutdown()


@functools.lru_cache(maxsize=None)
def serial(we: str, seed: int, steps: int = STEPS, backend: str = "reference") -> dict:
    """The oracle: one run in this process, as a user would make it without a sweep."""
    return nspec.load(CUBA, we=we).run(steps=steps, seed=seed, backend=backend)


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def assert_equals_serial(table: Path, steps: int = STEPS, backend: str = "reference") -> None:
    for row in rows(table):
        assert row["status"] == "ok", row["error"]
        with np.load(table.parent / row["outputs"]) as saved:
            expected = serial(row["we"], row["seed"], steps, backend)
            assert sorted(saved.files) == sorted(expected)
            for key in expected:
                np.testing.assert_array_equal(saved[key], expected[key], err_msg=f"{row['trial']}: {key}")


# ---------------------------------------------------------------- grid, seeds, keys
def test_grid_values_seeds_and_trials():
    assert parse_grid("we=1.62mV,2.0mV") == ("we", ("1.62mV", "2.0mV"))
    assert parse_grid("cells.tau=[1, 2],[3]") == ("cells.tau", ([1, 2], [3]))
    assert parse_grid("flag=true,false") == ("flag", (True, False))
    assert parse_grid("n=2,3") == ("n", ("2", "3"))  # numbers stay text, as --param keeps them
    assert split_values("[1, 2], [3,4]") == ["[1, 2]", "[3,4]"]
    assert parse_seeds("0:16") == tuple(range(16))
    assert parse_seeds("3,5,9") == (3, 5, 9) and parse_seeds("7") == (7,)
    assert si_value("1.62mV") == pytest.approx(1.62e-3) and si_value("2") is None and si_value("fast") is None
    assert parse_metric("rate=mean_rate(P)") == Metric("rate", "mean_rate(P)")
    assert parse_metric("mean_rate(P) * 2") == Metric("mean_rate(P) * 2", "mean_rate(P) * 2")
    for bad, why in [("we", "expected NAME=v1,v2"), ("we=1mV,,2mV", "an empty value"), ("we=1mV,1mV", "twice"),
                     ("2x=1", "expected NAME")]:
        with pytest.raises(SweepError, match=why):
            parse_grid(bad)
    for bad, why in [("4:2", "B must exceed A"), ("a:3", "not an integer"), ("-1", "from 0"), ("1,1", "twice")]:
        with pytest.raises(SweepError, match=why):
            parse_seeds(bad)
    with pytest.raises(SweepError, match="not an expression"):
        parse_metric("mean_rate(P")
    trials = expand({"we": ("1mV", "2mV"), "wi": ("-9mV",)}, (0, 1, 2))
    assert [(dict(t.point)["we"], t.seed) for t in trials] == [("1mV", 0), ("1mV", 1), ("1mV", 2), ("2mV", 0),
                                                               ("2mV", 1), ("2mV", 2)]
    assert len({t.key for t in trials}) == 6
    assert Trial((("we", "1mV"), ("wi", "-9mV")), 0).key == trials[0].key  # stable across processes and runs


def test_the_seed_is_data_and_a_hyperparameter_is_code():
    """What makes a variant: the run's seed leaves the compiled program alone (connectivity is drawn
    from the spec's own simulate seed), a weight changes it, an equal quantity written otherwise does not."""
    a, b, c = (nspec.load(CUBA, we=we) for we in ("2.0mV", "2mV", "1.62mV"))
    assert variant_key(a.program) == variant_key(b.program) != variant_key(c.program)
    p0, s0 = a.initial(1, 0)
    p1, s1 = a.initial(1, 1)
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)  # parameters (the synapse tables among them) do not move
    assert not np.array_equal(s0["P/v"], s1["P/v"])  # initial state does


# ---------------------------------------------------------------- the table
def test_table_rows_equal_serial_runs(local_ray, tmp_path):
    table = tmp_path / "results.parquet"
    summary = sweep(CUBA, {"we": ["1.62mV", "2.0mV"]}, table, seeds=range(2), steps=STEPS,
                    metrics=["mean_rate(P)", "exc=mean_rate(P[0:3200])"], progress=False)
    assert (summary.trials, summary.ran, summary.skipped, summary.errors, summary.rows) == (4, 4, 0, 0, 4)
    assert (summary.points, summary.variants) == (2, 2)
    got = rows(table)
    assert pq.read_schema(table).names == ["we", "we_si", "seed", "mean_rate(P)", "exc", "outputs", "status", "error",
                                           "attempts", "wall_s", "worker", "trial", "variant"]
    assert [(r["we"], r["seed"]) for r in got] == [("1.62mV", 0), ("1.62mV", 1), ("2.0mV", 0), ("2.0mV", 1)]
    assert [r["we_si"] for r in got] == pytest.approx([1.62e-3, 1.62e-3, 2e-3, 2e-3])
    assert all(r["attempts"] == 1 and r["wall_s"] > 0 and r["error"] is None for r in got)
    assert len({r["variant"] for r in got}) == 2
    assert_equals_serial(table)
    for r in got:
        spikes = serial(r["we"], r["seed"])["spikes.i"]
        seconds = STEPS * DT
        assert r["mean_rate(P)"] == pytest.approx(spikes.size / (N_NEURONS * seconds))
        assert r["exc"] == pytest.approx(np.sum(spikes < 3200) / (3200 * seconds))
    assert summary.lines()[0].startswith("swept 4 trials in")


def test_rerun_skips_finished_trials_and_resumes_the_rest(local_ray, tmp_path):
    table = tmp_path / "results.parquet"
    args = dict(grid={"we": ["1.62mV", "2.0mV"]}, output=table, seeds=[3, 4], steps=STEPS, progress=False)
    sweep(CUBA, **args)
    first = rows(table)
    again = sweep(CUBA, **args)
    assert (again.ran, again.skipped, again.rows) == (0, 4, 4)
    assert "skipped 4 finished trials" in again.lines()[0]
    # a sweep cut short: two trials have no row, a third lost its outputs
    folder = table.with_name(table.name + ".d")
    for row in first[:2]:
        (folder / "rows" / f"trial-{row['trial']}.parquet").unlink()
    (table.parent / first[2]["outputs"]).unlink()
    table.unlink()
    resumed = sweep(CUBA, **args)
    assert (resumed.ran, resumed.skipped, resumed.rows) == (3, 1, 4)
    keep = ("we", "seed", "outputs", "status", "trial", "variant")
    assert [{k: r[k] for k in keep} for r in rows(table)] == [{k: r[k] for k in keep} for r in first]
    assert_equals_serial(table)


def _trial_workers() -> list[int]:
    """This process's descendants that run a trial now (Ray titles a worker by its task: ray::run_trial)."""
    children: dict[int, list[tuple[int, bytes]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append((int(entry.name), title))
    found, stack = [], [os.getpid()]
    while stack:
        for pid, title in children.get(stack.pop(), []):
            stack.append(pid)
            if title.startswith(b"ray::run_trial"):
                found.append(pid)
    return found


def test_a_killed_worker_is_retried_and_every_trial_is_recorded_once(local_ray, tmp_path):
    """SIGKILL a worker in the middle of a trial.  The victim is a worker that has finished a trial
    already (its pid is in a row), so it has begun the new one as soon as Ray titles it by the task:
    a fresh worker would spend its first second receiving the program, before the trial begins."""
    table, steps = tmp_path / "results.parquet", 2500
    grid, seeds = {"we": ["1.62mV", "2.0mV"]}, range(3)
    outcome: dict = {}

    def run():
        outcome["summary"] = sweep(CUBA, grid, table, seeds=seeds, steps=steps, progress=False)

    thread = threading.Thread(target=run)
    thread.start()
    rows_folder = table.with_name(table.name + ".d") / "rows"
    killed, seen = None, {}
    deadline = time.monotonic() + 300
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        done = [pq.read_table(p).to_pylist()[0] for p in rows_folder.glob("trial-*.parquet")] \
            if rows_folder.is_dir() else []
        warm = {int(r["worker"].rsplit(":", 1)[1]): r["trial"] for r in done}
        finished = {r["trial"] for r in done}
        now = time.monotonic()
        for pid in _trial_workers():
            if pid in warm and now - seen.setdefault((pid, len(finished)), now) > 0.3:
                killed = pid
                os.kill(pid, signal.SIGKILL)
                break
        time.sleep(0.02)
    thread.join()
    assert killed is not None, "no warm worker was seen running a trial"
    summary = outcome["summary"]
    assert summary.retried == 1 and summary.errors == 0 and summary.rows == 6
    got = rows(table)
    assert sorted(r["trial"] for r in got) == sorted(t.key for t in expand(grid, seeds))
    assert sorted(r["attempts"] for r in got) == [1, 1, 1, 1, 1, 2]
    retried = next(r for r in got if r["attempts"] == 2)
    assert retried["worker"] != f"{retried['worker'].rsplit(':', 1)[0]}:{killed}"  # another worker finished it
    assert_equals_serial(table, steps)


def test_a_failing_trial_is_a_row_with_its_error(local_ray, tmp_path):
    table = tmp_path / "results.parquet"
    summary = sweep(CUBA, {"we": ["1.62mV", "2.0s", "1e40mV"]}, table, seeds=[0], steps=50,
                    metrics=["mean_rate(P)"], progress=False)
    assert (summary.rows, summary.errors) == (3, 2)
    ok, wrong_unit, overflow = rows(table)
    assert ok["status"] == "ok" and ok["mean_rate(P)"] is not None
    assert wrong_unit["status"] == "error" and wrong_unit["outputs"] is None and wrong_unit["mean_rate(P)"] is None
    assert "we" in wrong_unit["error"] and "mV" in wrong_unit["error"] and "^" in wrong_unit["error"]  # located
    assert overflow["status"] == "error" and "NaN or Inf" in overflow["error"] and "cuba.nspec:22" in overflow["error"]
    again = sweep(CUBA, {"we": ["1.62mV", "2.0s", "1e40mV"]}, table, seeds=[0], steps=50, metrics=["mean_rate(P)"],
                  progress=False)
    assert (again.skipped, again.ran) == (1, 2)  # errors are run again, finished trials are not
    # the same sweep from the command line resumes it too, and exits 1 while a trial fails
    argv = ["sweep", str(CUBA), "--grid", "we=1.62mV,2.0s,1e40mV", "--seeds", "0", "--steps", "50", "--metric",
            "mean_rate(P)", "-o", str(table), "-q"]
    assert main(argv) == 1
    assert [r["status"] for r in rows(table)] == ["ok", "error", "error"]


def test_compiled_once_per_variant_and_shipped_to_workers(local_ray, tmp_path, monkeypatch):
    """TVM: the driver compiles one library per variant into its cache; the workers, whose cache
    folder starts empty, get them through the object store and compile nothing."""
    monkeypatch.setenv("NSPEC_CACHE_DIR", str(tmp_path / "driver-cache"))
    before = set(os.listdir(local_ray))
    table = tmp_path / "results.parquet"
    summary = sweep(CUBA, {"we": ["1.62mV", "2.0mV"]}, table, seeds=range(2), steps=200, backend="tvm",
                    progress=False)
    assert (summary.variants, summary.compiled, summary.cached, summary.worker_builds) == (2, 2, 0, 0)
    driver_entries = {p.name for p in (tmp_path / "driver-cache" / "tvm").iterdir() if len(p.name) == 64}
    worker_entries = {p.name for p in (local_ray / "tvm").iterdir() if len(p.name) == 64} - before
    assert len(driver_entries) == 2 and driver_entries <= worker_entries | set(before)
    assert_equals_serial(table, 200, "tvm")
    # equal programs are one variant: 2mV and 2.0mV compile to the same code
    same = sweep(CUBA, {"we": ["2mV", "2.0mV"]}, tmp_path / "same.parquet", seeds=[0], steps=50, progress=False)
    assert (same.points, same.variants) == (2, 1)


def test_onnxruntime_lowers_in_the_workers_and_says_so(local_ray, tmp_path):
    """ONNX Runtime builds its session where it runs: once per worker process and variant, counted."""
    table = tmp_path / "ort.parquet"
    summary = sweep(CUBA, {"we": ["2.0mV"]}, table, seeds=range(3), steps=100, backend="onnxruntime", progress=False)
    assert (summary.variants, summary.compiled, summary.errors) == (1, 0, 0)
    workers = {r["worker"] for r in rows(table)}
    assert summary.worker_builds == len(workers) >= 1
    assert "onnxruntime: lowered in the workers" in summary.lines()[1]
    assert_equals_serial(table, 100, "onnxruntime")


# ---------------------------------------------------------------- the command line
def test_cli_sweep_and_its_mistakes(local_ray, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    base = ["sweep", str(CUBA), "--steps", "50", "-o", str(out)]
    assert main(base + ["--grid", "we=1.62mV,2.0mV", "--seeds", "0:2", "--metric", "mean_rate(P)"]) == 0
    printed = capsys.readouterr().out
    assert "swept 4 trials" in printed and f"wrote {out} (4 rows)" in printed
    assert main(base + ["--grid", "we=1.62mV,2.0mV", "--seeds", "0:2", "--metric", "mean_rate(P)"]) == 0
    assert "skipped 4 finished trials" in capsys.readouterr().out

    assert main(base + ["--grid", "we"]) == 1
    assert "--grid we: expected NAME=v1,v2" in capsys.readouterr().err
    assert main(base + ["--grid", "we=1mV", "--seeds", "3:1"]) == 1
    assert "B must exceed A" in capsys.readouterr().err
    # another sweep's table is kept unless --force
    assert main(base + ["--grid", "we=1.62mV", "--seeds", "0:2"]) == 1
    assert "holds the table of another sweep" in capsys.readouterr().err
    assert len(rows(out)) == 4
    assert main(base + ["--grid", "we=1.62mV", "--seeds", "0:2", "--force", "-q"]) == 0
    assert len(rows(out)) == 2
    # a file that is no sweep's table
    junk = tmp_path / "mine.parquet"
    junk.write_text("keep me")
    assert main(["sweep", str(CUBA), "--grid", "we=1mV", "-o", str(junk)]) == 1
    assert "exists and is no sweep's table; pass --force" in capsys.readouterr().err and junk.read_text() == "keep me"
    # an unknown hyperparameter, located on the command line; nothing is written
    fresh = tmp_path / "fresh.parquet"
    argv = ["sweep", str(CUBA), "--grid", "wx=1mV,2mV", "-o", str(fresh)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "unknown hyperparameter 'wx'" in err and "hyperparameters of " in err and ": we, wi" in err
    line = next(ln for ln in err.splitlines() if ln.startswith("<command line>:1:"))
    col = int(line.split(":")[2])
    assert " ".join(["nspec", *argv])[col - 1:col + 1] == "wx"
    assert not fresh.exists() and not fresh.with_name("fresh.parquet.d").exists()
    assert main(["sweep", str(CUBA), "--grid", "we=1mV", "-o", str(tmp_path / "no" / "t.parquet")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["sweep", str(CUBA), "--grid", "we=1mV", "-p", "we=2mV", "-o", str(fresh)]) == 1
    assert "given by --param and by --grid" in capsys.readouterr().err
    assert main(["sweep", str(CUBA), "--grid", "we=1mV", "--backend", "nope", "-o", str(fresh)]) == 1
    assert "unknown backend 'nope'" in capsys.readouterr().err
    assert main(["sweep", str(CUBA), "--grid", "we=1mV", "--retries", "-1", "-o", str(fresh)]) == 1
    assert "--retries is a number of reruns" in capsys.readouterr().err
    with pytest.raises(SweepError, match="seeds are distinct integers"):
        sweep(CUBA, {"we": ["1mV"]}, fresh, seeds=[1, -2])
    assert json.loads((out.with_name("cli.parquet.d") / "sweep.json").read_text())["grid"] == {"we": ["1.62mV"]}


def test_cli_joins_a_running_cluster_by_its_address(local_ray, tmp_path):
    """``--address`` joins the cluster this module started, from another process (a second driver)."""
    out = tmp_path / "joined.parquet"
    argv = [sys.executable, "-m", "nspec", "sweep", str(CUBA), "--grid", "we=1.62mV", "--seeds", "5:7", "--steps", "50",
            "--address", ray.get_runtime_context().gcs_address, "-o", str(out), "-q"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert [(r["we"], r["seed"]) for r in rows(out)] == [("1.62mV", 5), ("1.62mV", 6)]
    assert_equals_serial(out, 50)
