"""The README's commands are the ones CI and users run."""
from pathlib import Path

import torch

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


def test_readme_example_runs_as_written():
    text = (ROOT / "README.md").read_text()
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.get_samples()["x_0"].shape == (64, 1, 8, 8)
    assert result.ess.shape == (51,)
    assert torch.isfinite(result.log_evidence)
