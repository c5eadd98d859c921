"""Execute the tutorial notebooks and save them with their outputs.

    python tutorials/build_notebooks.py                 # every notebook, full sizes
    python tutorials/build_notebooks.py 02 --quick      # the notebooks whose name starts with 02, small sizes

The notebooks read ``PYRO_TWIST_QUICK`` from the environment: ``--quick`` sets it to 1 (the sizes the
test suite runs). Saved notebooks should come from a full run.
"""
import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent
ROOT = TUTORIALS.parent


def execute(path, quick=False, timeout=3600):
    """Run the notebook at ``path`` in a fresh ``python3`` kernel (from its own folder, importing this
    checkout's packages before any installed copy) and return it with outputs; a failing cell raises
    ``nbclient.exceptions.CellExecutionError``."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(path).parent)}})
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    client.execute(env={**os.environ, "PYTHONPATH": python_path, "PYRO_TWIST_QUICK": "1" if quick else "0"})
    return notebook


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="run only the notebooks whose name starts with one of these")
    parser.add_argument("--quick", action="store_true", help="small sizes (PYRO_TWIST_QUICK=1)")
    args = parser.parse_args()
    paths = [path for path in sorted(TUTORIALS.glob("*.ipynb"))
             if not args.prefixes or path.name.startswith(tuple(args.prefixes))]
    if not paths:
        raise SystemExit(f"no notebook in {TUTORIALS} starts with {args.prefixes}")
    for path in paths:
        start = time.perf_counter()
        nbformat.write(execute(path, quick=args.quick), path)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s, {path.stat().st_size / 1024:.0f} KB", flush=True)


if __name__ == "__main__":
    main()
