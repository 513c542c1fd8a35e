# Colab set-up. On Google Colab this installs the lab's library, dpolab, at the revision this
# notebook was released with, and keeps Colab's own torch (with its CUDA build) as it is.
# Anywhere else (JupyterLab, Binder, nbgrader) it does nothing: dpolab is already installed.
import os
import sys

REPOSITORY = "https://github.com/dpo-lab/dpo-lab"  # stamped by `make release`
REVISION = "v0.1.0"  # the release tag: the library these notebooks were written against


def _install_dpolab():
    import importlib
    import importlib.metadata as metadata
    import subprocess
    import tempfile

    # DPOLAB_INSTALL_SOURCE=/path/to/checkout installs from a local copy (the tests use it).
    source = os.environ.get("DPOLAB_INSTALL_SOURCE") or f"git+{REPOSITORY}@{REVISION}"
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
    torch_after = metadata.version("torch")
    kept = "kept as it was" if torch_after == torch_before else f"CHANGED from {torch_before}"
    print(f"installed dpolab {metadata.version('dpolab')} from {source}; torch {torch_after} {kept}")


if "google.colab" in sys.modules or os.environ.get("DPOLAB_INSTALL_SOURCE"):
    _install_dpolab()
