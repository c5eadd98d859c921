"""The README's commands are the ones CI and users run."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme_commands = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()[:8]]
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1].strip()
    assert ci_command in readme_commands


def test_demo_writes_its_picture(tmp_path, capsys):
    from pyro_twist.demo import main

    out = tmp_path / "demo.png"
    main(["--num-particles", "128", "--num-steps", "40", "--out", str(out)])
    assert out.stat().st_size > 10_000
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "TV" in line}
    tv = {name: float(line.split("=")[1].split()[0]) for name, line in lines.items()}
    assert tv["FK"] < tv["base"] and tv["TDS"] < tv["base"]
