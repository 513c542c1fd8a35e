# Colab set-up of the graded course. On Google Colab this installs the course's dpolab: the
# lab's helpers without the exercises' reference answers (the "student package" your instructor
# built), and keeps Colab's own torch (with its CUDA build) as it is.
# Anywhere else (JupyterLab, JupyterHub, nbgrader) it does nothing: the course installed it.
import os
import sys

PACKAGE_URL = ""  # stamped by `dpolab-graded-course --package-url`: where the course put the wheel


def _install_dpolab():
    import glob
    import importlib
    import importlib.metadata as metadata
    import subprocess
    import tempfile

    # DPOLAB_INSTALL_SOURCE=/path/to/the/wheel installs a local copy (the tests use it).
    source = os.environ.get("DPOLAB_INSTALL_SOURCE") or PACKAGE_URL
    if not source:  # no address given: the wheel uploaded to Colab's Files panel
        wheels = sorted(glob.glob("dpolab-*+student-*.whl"))
        if not wheels:
            raise RuntimeError(
                "Upload the file dpolab-...+student-....whl from your course (Files panel, left), "
                "then run this cell again."
            )
        source = wheels[-1]
    try:
        torch_before = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_before = None
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        if torch_before:  # pip may not touch torch: it fails rather than up- or downgrade it
            pins.write(f"torch=={torch_before}\n")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--constraint", pins.name, source]
    subprocess.run(cmd, check=True)
    os.unlink(pins.name)
    importlib.invalidate_caches()
    print(f"installed dpolab {metadata.version('dpolab')} from {source}; torch {metadata.version('torch')}")


if "google.colab" in sys.modules or os.environ.get("DPOLAB_INSTALL_SOURCE"):
    _install_dpolab()
