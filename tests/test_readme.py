"""The README's commands are the ones CI and users run."""
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme_commands = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()[:8]]
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert ci_command in readme_commands


def test_demo_steers_toward_the_digit_and_counts_every_evaluation(tmp_path):
    from pyro_twist.demo import main

    out = tmp_path / "demo.png"
    n, k, iterations = 64, 20, 2
    summaries = main(["--digit", "7", "--num-particles", str(n), "--num-steps", str(k),
                      "--num-iterations", str(iterations), "--no-progress", "--out", str(out)])
    assert out.stat().st_size > 50_000
    # One denoiser evaluation per particle and step; TRI-TSMC's learning runs count too.
    assert [s["evaluations"] for s in summaries.values()] == [n * k] * 3 + [(iterations + 1) * n * k]
    base = summaries["base sampling"]["hit_rate"]
    assert base < 0.3  # about a tenth of base samples are 7s
    for method in ("FK steering", "TDS", "TRI-TSMC"):
        assert summaries[method]["hit_rate"] > base + 0.4, method


def readme_code_blocks():
    blocks, block, indent = [], None, ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if block is None and line.strip() == "```python":
            block, indent = [], line[: line.index("`")]
        elif block is not None and line.strip() == "```":
            blocks.append("\n".join(block))
            block = None
        elif block is not None:
            block.append(line[len(indent):])
    return blocks


def test_readme_has_its_code_blocks():
    assert len(readme_code_blocks()) == 8


@pytest.mark.parametrize("index", range(8))
def test_readme_code_block_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks may write files (a saved twist)
    namespace = {}
    exec(compile(readme_code_blocks()[index], f"README.md block {index}", "exec"), namespace)
    result = namespace.get("result")
    if result is not None:
        assert math.isfinite(float(result.log_evidence))
    if index == 0:
        assert result.get_samples()["x_0"].shape == (64, 1, 8, 8)
        assert result.ess.shape == (51,)
    if index == 2:  # the learned twist reaches the closed form
        assert abs(result.log_evidence.item() - namespace["kernel"].log_normalizer(namespace["a"]).item()) < 0.05
    if index == 5:  # numpyro_twist steers the digits model toward 3
        assert float((namespace["classifier"].logits(namespace["x0"]).argmax(-1) == 3).mean()) > 0.8
    if index == 6:  # TRI-TSMC in NumPyro reaches the closed form, as in Pyro
        assert abs(float(result.log_evidence) - float(namespace["kernel"].log_normalizer(namespace["a"]))) < 0.05
