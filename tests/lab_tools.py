"""JupyterLab on loopback and Debian's chromium through Playwright, for the browser tests.

``jupyterlab(root, tmp)`` serves ``root`` on 127.0.0.1 with a token (formgrader reads the
``nbgrader_config.py`` there); ``chromium()`` launches the browser. Both need what
``scripts/setup.sh test`` installs (chromium from apt, the playwright package); ``require_browser``
skips a test, saying why, without them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def require_browser() -> None:
    if not CHROMIUM:
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium; scripts/setup.sh test does it as root)"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[test]')"
    )


def screenshot_folder(tmp_path_factory, name: str) -> Path:
    """``$DPOLAB_SCREENSHOTS``, or a pytest temporary folder; printed, so that it can be found."""
    folder = Path(os.environ.get("DPOLAB_SCREENSHOTS") or tmp_path_factory.mktemp(name))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\n{name}: {folder}")
    return folder


class Lab(NamedTuple):
    url: str
    token: str
    log: Path
    pid: int  # the server's process (its kernels are its children)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab(
    root: Path,
    tmp: Path,
    env: dict[str, str] | None = None,
    python: Path | None = None,
    launcher: Sequence[str] = (),
) -> Iterator[Lab]:
    """JupyterLab serving ``root`` on 127.0.0.1 with a token; yields a :class:`Lab`.

    ``python``: the interpreter whose JupyterLab (and default kernel) runs, another venv's (then
    its bin comes first on PATH, and this run's PYTHONPATH stays out); default this one.
    ``launcher``: a command the server is started through (``binder/start``: it ends in exec)."""
    settings = tmp / "settings" / "@jupyterlab"
    # every cell in the page (no virtual scrolling), no news or update prompts
    (settings / "notebook-extension").mkdir(parents=True, exist_ok=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (settings / "apputils-extension").mkdir(parents=True, exist_ok=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
    token, port = secrets.token_hex(16), free_port()
    other = python is not None
    python = Path(python or sys.executable)
    base = {k: v for k, v in os.environ.items() if not (other and k in ("PYTHONPATH", "PYTHONHOME"))}
    full_env = {
        **base,
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DPOLAB_DEVICE": "cpu",
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        **(env or {}),
    }
    full_env.pop("DPOLAB_INSTALL_SOURCE", None)
    cmd = [
        *launcher, str(python), "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp / "jupyterlab.log"
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, cwd=root, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not start:\n{log.read_text()}") from None
                time.sleep(0.5)
        yield Lab(url, token, log, server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def chromium():
    """A headless Debian chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield browser
        finally:
            browser.close()
