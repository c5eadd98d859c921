import contextlib
import io
import json
import math

import pytest
import torch

from benchmarks import gpu_overhead

TINY_PARTICLES = (8, 16)
METHODS = (gpu_overhead.PLAIN_LOOP, "ImportanceSampling", "FKSteering", "TwistedSMC, learned twist")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny CPU run: the rows main returns, what it printed, and the JSON it wrote."""
    path = tmp_path_factory.mktemp("overhead") / "rows.json"
    printed, threads = io.StringIO(), torch.get_num_threads()
    # The timings' values are not checked here, and one thread stays quick on a machine whose cores are shared.
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(printed):
            rows = gpu_overhead.main(["--tiny", "--device", "cpu", "--no-progress", "--json", str(path)])
    finally:
        torch.set_num_threads(threads)
    return rows, printed.getvalue(), json.loads(path.read_text())


def test_overhead_rows_cover_every_method_and_size(tiny_run):
    rows, _, _ = tiny_run
    assert sorted((row["method"], row["num_particles"]) for row in rows) == sorted(
        (method, n) for method in METHODS for n in TINY_PARTICLES)


def test_overhead_ratios_are_times_over_the_plain_loop(tiny_run):
    rows, _, _ = tiny_run
    plain = {row["num_particles"]: row["ms_per_step"] for row in rows if row["method"] == gpu_overhead.PLAIN_LOOP}
    for row in rows:
        assert math.isfinite(row["ms_per_step"]) and row["ms_per_step"] > 0, row
        assert row["ratio"] == pytest.approx(row["ms_per_step"] / plain[row["num_particles"]], rel=1e-12), row
        assert row["peak_gpu_mib"] is None, "peak GPU memory is not measured on CPU"
    assert all(row["ratio"] == 1.0 for row in rows if row["method"] == gpu_overhead.PLAIN_LOOP)


def test_overhead_report_prints_and_writes_the_rows(tiny_run):
    rows, printed, written = tiny_run
    assert written["rows"] == rows
    assert written["num_steps"] == 5 and written["repeats"] == 1 and written["device"].startswith("CPU")
    table = gpu_overhead.markdown_table(rows)
    assert table in printed
    assert len(table.splitlines()) == 2 + len(rows)
    for line, row in zip(table.splitlines()[2:], rows):
        assert line.startswith(f"| {row['method']} | {row['num_particles']} | ") and "not measured" in line, line


def test_overhead_rejects_bad_sizes():
    with pytest.raises(SystemExit):
        gpu_overhead.parse_args(["--repeats", "0"])
