"""The tutorial notebooks: saved with the outputs of a full run, and run end to end at small sizes with
the claims they assert holding."""
import importlib.util
import shutil
from pathlib import Path

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = ["01_steering_a_mixture.ipynb", "02_steering_digits.ipynb",
             "03_diffusion_prior_in_a_bayesian_model.ipynb", "04_numpyro_steering.ipynb",
             "05_noise_level_by_pmmh.ipynb"]
MAX_SAVED_BYTES = 500_000


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", TUTORIALS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_cells(notebook):
    return [cell for cell in notebook.cells if "checks" in cell.metadata.get("tags", [])]


def _printed(cells):
    return "".join(output.get("text", "") for cell in cells for output in cell.outputs)


def test_the_tutorials_are_the_listed_notebooks():
    assert sorted(path.name for path in TUTORIALS.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_saved_tutorial_holds_a_full_run(name):
    path = TUTORIALS / name
    assert path.stat().st_size < MAX_SAVED_BYTES, "keep figures small (few panels, dpi about 72)"
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
        "save the notebook executed top to bottom: python tutorials/build_notebooks.py")
    assert not any(output.output_type == "error" for cell in code for output in cell.outputs)
    assert "checks passed" in _printed(_check_cells(notebook))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs_in_quick_mode_and_its_checks_pass(name, tmp_path):
    copy = tmp_path / name  # the saved notebook keeps its full-run outputs
    shutil.copy(TUTORIALS / name, copy)
    notebook = _builder().execute(copy, quick=True, timeout=600)  # any failing cell, a failed assert included, raises
    checks = _check_cells(notebook)
    assert checks and all("assert " in cell.source for cell in checks), f"{name}: tag a cell of asserts 'checks'"
    assert "checks passed" in _printed(checks)
