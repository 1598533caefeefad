"""One network over several Ray workers (``runtime/partition.py``) against the single process.

The oracle is ``Model.run`` on the reference interpreter with the same seed: the partitioned run
must give the same spikes (indices and times, bit for bit), exchange every minimum-delay interval,
and send 4 bytes per spike to each other worker.  Networks it cannot split are refused at the line
that stops them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import ray

import nspec
from nspec.cli import main
from nspec.runtime.partition import PartitionError, run_partitioned
from nspec.runtime.ray_start import start_ray

ROOT = Path(__file__).resolve().parents[1]
CUBA = ROOT / "specs" / "cuba.nspec"
DELAYS = ROOT / "tests" / "partition" / "cuba_delays.nspec"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def same(single: dict, parted: dict) -> None:
    assert sorted(single) == sorted(parted)
    for k in single:
        assert single[k].dtype == parted[k].dtype, k
        np.testing.assert_array_equal(single[k], parted[k], err_msg=k)


@pytest.mark.parametrize("seed", [42, 7])
@pytest.mark.parametrize("workers,ranges", [(2, None), (3, {"P": [(0, 700), (700, 3300), (3300, 4000)]})],
                         ids=["2-equal", "3-uneven"])
def test_cuba_gives_the_single_process_spikes(seed, workers, ranges):
    model = nspec.load(CUBA)
    steps = 1500
    single = model.run(steps=steps, seed=seed, nan_check="off")
    stats = {}
    parted = run_partitioned(model, workers, steps=steps, seed=seed, ranges=ranges, stats=stats)
    same(single, parted)
    assert len(single["spikes.i"]) > 1000  # the network is active: the comparison means something
    run = stats["run"]
    assert (run.interval, run.exchanges) == (1, steps)  # no delay: the increment lands in the next step
    if ranges:
        assert run.populations["P"] == tuple(ranges["P"])


def test_bytes_exchanged_are_four_per_spike_per_other_worker():
    model = nspec.load(CUBA)
    single = model.run(steps=400, nan_check="off")
    for workers in (1, 3):
        stats = {}
        run_partitioned(model, workers, steps=400, stats=stats)
        run = stats["run"]
        assert run.spikes == len(single["spikes.i"])  # every spike of P is sent once, by its worker
        assert run.bytes == 4 * len(single["spikes.i"]) * (workers - 1)


def test_delays_exchange_every_minimum_delay_interval():
    model = nspec.load(DELAYS)
    steps = 603  # not a multiple of the interval: the last exchange covers 3 steps
    single = model.run(steps=steps, nan_check="off")
    stats = {}
    parted = run_partitioned(model, 3, steps=steps, stats=stats)
    same(single, parted)  # spikes and the recorded v of P[100:110], which straddles no range but is sliced
    run = stats["run"]
    assert run.interval == 5  # min(10, 5) steps
    assert run.exchanges == math.ceil(steps / 5)
    assert run.bytes == 4 * len(single["spikes.i"]) * 2


def test_poisson_drive_and_delays_of_brunel_2000():
    # per-step counter-based draws (PoissonInput), a one_to_one scatter and 15-step delays
    model = nspec.load(ROOT / "specs" / "brian2" / "brunel_2000.nspec", NE=800, CE=100)
    single = model.run(steps=300, nan_check="off")
    stats = {}
    same(single, run_partitioned(model, 2, steps=300, stats=stats))
    assert stats["run"].interval == 15
    assert len(single["spikes.i"]) > 100


def test_plastic_synapses_are_refused_at_their_line():
    model = nspec.load(ROOT / "specs" / "brian2" / "stdp_song.nspec")
    with pytest.raises(PartitionError, match=r"stdp_song\.nspec:35:13: error: cannot partition: the weights of "
                                             r"this projection are state"):
        run_partitioned(model, 2, steps=10)


def test_a_spec_that_is_not_a_network_is_refused():
    model = nspec.load(ROOT / "specs" / "examples" / "hopfield.nspec")
    with pytest.raises(PartitionError, match=r"hopfield\.nspec:\d+:\d+: error: cannot partition: 'Hopfield' is not "
                                             r"a spiking network"):
        run_partitioned(model, 2, steps=10)


def test_cli_workers_writes_the_single_process_monitors(tmp_path, capsys):
    out = tmp_path / "run.npz"
    assert main(["run", str(CUBA), "--workers", "2", "--steps", "200", "-o", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "on reference x 2 workers" in printed and "in 200 exchanges, one every 1 steps" in printed
    with np.load(out) as parted:
        same(nspec.load(CUBA).run(steps=200, seed=3, nan_check="off"), dict(parted))
    assert main(["run", str(CUBA), "--workers", "2", "--steps", "200", "-o", str(out)]) == 1  # no overwrite


def test_cli_workers_reports_a_network_it_cannot_split(capsys):
    assert main(["run", str(ROOT / "specs" / "brian2" / "stdp_song.nspec"), "--workers", "2", "--steps", "5"]) == 1
    err = capsys.readouterr().err
    assert "stdp_song.nspec:35:13: cannot partition" in err and "Traceback" not in err


def test_ranges_must_cover_each_population_in_order():
    from nspec.compiler.partition import partition

    program = nspec.load(CUBA).program
    assert partition(program, 3).populations[0].ranges == ((0, 1333), (1333, 2667), (2667, 4000))
    with pytest.raises(ValueError, match=r"population 'P' \(4000 neurons\) needs 2 non-empty contiguous ranges"):
        partition(program, 2, {"P": [(0, 1000), (1200, 4000)]})
    with pytest.raises(ValueError, match=r"ranges for Q: not a population of 'CUBA' \(its populations: P\)"):
        partition(program, 2, {"Q": [(0, 1), (1, 2)]})
    with pytest.raises(ValueError, match=r"population 'A' has 2 neurons, fewer than the 3 workers"):
        partition(nspec.load(ROOT / "specs" / "examples" / "events.nspec").program, 3)
