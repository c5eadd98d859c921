"""Importing the plots leaves matplotlib's backend to the user (a notebook's inline backend survives)."""
import subprocess
import sys


def test_importing_plots_keeps_the_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import pyro_twist.plots, pyro_twist.demo; "
            "print(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "svg"
