"""`make lab` opens Part 1 in the student's JupyterLab: nbgrader's student tools only.

nbgrader's JupyterLab extension has student tools (Validate, Assignments) and instructor tools
(Create Assignment, Formgrader, Courses). ``make student-lab`` (what ``make lab`` runs after its
set-up) puts binder/student-jupyter-config first on ``JUPYTER_CONFIG_PATH``: its
``labconfig/page_config.json`` disables the instructor's lab plugins and its
``jupyter_server_config.json`` the formgrader and course-list server extensions. A plain
``jupyter lab`` (the instructor's) keeps them. Each test starts a real server on a free loopback
port with a token, reads the page config that ``/lab`` serves (the ``jupyter-config-data``
JSON) and asks for ``/formgrader``; the browser the server would open is a script that writes
down the address it was given.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab")
pytest.importorskip("nbgrader")

ROOT = Path(__file__).resolve().parent.parent
STUDENT_CONFIG = ROOT / "binder" / "student-jupyter-config"
PART_1 = "notebooks/lab_3_1_5_dpo/01_dpo_loss.ipynb"
BIN = Path(sys.executable).parent  # the venv the tests run in (make's VENV)
INSTRUCTOR_PLUGINS = {
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:course-list",
}
STUDENT_PLUGINS = {
    "@jupyter/nbgrader:menu",
    "@jupyter/nbgrader:assignment-list",
    "@jupyter/nbgrader:validate-assignment",
}
START_TIMEOUT = 90  # seconds for the server to answer
REQUEST_TIMEOUT = 20
CONFIG_DATA = re.compile(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


class Lab:
    def __init__(self, base: str, token: str, opened: Path):
        self.base, self.token, self.opened = base, token, opened

    def status(self, path: str) -> int:
        return get(f"{self.base}{path}?token={self.token}")[0]

    def page_config(self, path: str = "/lab") -> dict:
        code, text = get(f"{self.base}{path}?token={self.token}")
        assert code == 200, f"{path}: HTTP {code}"
        match = CONFIG_DATA.search(text)
        assert match, f"{path} has no jupyter-config-data"
        return json.loads(html.unescape(match.group(1)))

    def browser_address(self) -> str:
        """The address the server told the browser to open (through its redirect file, if any)."""
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while not self.opened.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.opened.exists(), "the server opened no browser"
        target = self.opened.read_text(encoding="utf-8").split()[0]
        if target.startswith("file://"):
            page = Path(urllib.request.url2pathname(target[len("file://") :])).read_text(encoding="utf-8")
            target = re.search(r'url=([^"]+)"', page).group(1)
        return target


@contextmanager
def jupyter_lab(tmp_path: Path, student: bool):
    """A JupyterLab server on a free loopback port: ``make student-lab``, or a plain ``jupyter lab``."""
    port, token = free_port(), "student-lab-test"
    opened = tmp_path / "browser-opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(
        textwrap.dedent(
            f"""\
            import sys
            with open({str(opened)!r}, "w") as f:
                f.write(sys.argv[1])
            """
        )
    )
    options = [
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.browser={sys.executable} {browser} %s",
    ]
    env = dict(os.environ)
    env.pop("JUPYTER_CONFIG_PATH", None)
    # the user's own ~/.jupyter and runtime files stay out of it
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "user-config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime")
    )
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if student:
        if shutil.which("make") is None:
            pytest.skip("make is not installed")
        # LAB_ARGS is split by the shell of make's recipe: quote the browser command
        lab_args = " ".join(f"'{o}'" for o in options)
        command = [
            "make",
            "--no-print-directory",
            "student-lab",
            f"VENV={BIN.parent}",
            f"LAB_ARGS={lab_args}",
        ]
    else:
        root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        command = [sys.executable, "-m", "jupyterlab", PART_1, *root, *options]
    log = tmp_path / "jupyter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}"
                )
            try:
                if get(f"{base}/api/status?token={token}")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter lab did not answer in {START_TIMEOUT} s:\n{log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.3)
        yield Lab(base, token, opened)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM to the server's whole process group (make and jupyter), SIGKILL after ``grace`` s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    try:
        proc.wait(timeout=grace)
        while time.monotonic() < deadline:  # jupyter may outlive make by a moment
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_student_config_names_nbgraders_plugins():
    """The ids the student config disables are the ones nbgrader's lab extension defines."""
    config = json.loads((STUDENT_CONFIG / "labconfig" / "page_config.json").read_text())
    disabled = {name for name, off in config["disabledExtensions"].items() if off}
    assert disabled == INSTRUCTOR_PLUGINS
    static = Path(sys.prefix, "share", "jupyter", "labextensions", "@jupyter", "nbgrader", "static")
    if not static.is_dir():
        pytest.skip(f"nbgrader's lab extension is not in {static}")
    source = "".join(p.read_text(errors="replace") for p in static.glob("*.js"))
    defined = set(re.findall(r'"(@jupyter/nbgrader:[a-z-]+)"', source))
    assert INSTRUCTOR_PLUGINS | STUDENT_PLUGINS <= defined, defined
    server = json.loads((STUDENT_CONFIG / "jupyter_server_config.json").read_text())
    assert server["ServerApp"]["jpserver_extensions"] == {
        "nbgrader.server_extensions.formgrader": False,
        "nbgrader.server_extensions.course_list": False,
    }


def test_make_lab_opens_part_1_with_the_students_tools_only(tmp_path):
    with jupyter_lab(tmp_path, student=True) as lab:
        config = lab.page_config()
        disabled = set(config["disabledExtensions"])
        assert INSTRUCTOR_PLUGINS <= disabled, disabled
        assert not STUDENT_PLUGINS & disabled, disabled
        assert "@jupyter/nbgrader" in {e["name"] for e in config["federated_extensions"]}
        # the instructor's server side is not there; the student's is
        assert lab.status("/formgrader") == 404
        assert lab.status("/formgraders") == 404
        assert lab.status("/assignments") != 404
        # the browser opens Part 1
        address = lab.browser_address()
        assert address.split("?")[0].endswith("/lab/tree/01_dpo_loss.ipynb"), address
        assert lab.page_config("/lab/tree/01_dpo_loss.ipynb")["treePath"] == "01_dpo_loss.ipynb"


def test_plain_jupyter_lab_keeps_the_instructors_tools(tmp_path):
    with jupyter_lab(tmp_path, student=False) as lab:
        disabled = set(lab.page_config()["disabledExtensions"])
        assert not (INSTRUCTOR_PLUGINS | STUDENT_PLUGINS) & disabled, disabled
        assert lab.status("/formgrader") == 200
    # formgrader read the repository's nbgrader_config.py: nothing in it that nbgrader 0.9 does not know
    text = (tmp_path / "jupyter.log").read_text(errors="replace")
    assert "db_assignments" not in text, "nbgrader_config.py sets an option nbgrader 0.9 does not know"
    assert "Config option" not in text and "not recognized" not in text, text[-3000:]


def test_binder_start_puts_the_student_config_first(tmp_path):
    start = ROOT / "binder" / "start"
    assert os.access(start, os.X_OK), "repo2docker runs binder/start only when it is executable"
    env = {**os.environ, "JUPYTER_CONFIG_PATH": "/elsewhere"}
    out = subprocess.run(
        [str(start), sys.executable, "-c", "import os; print(os.environ['JUPYTER_CONFIG_PATH'])"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert out.split(os.pathsep) == [str(STUDENT_CONFIG), "/elsewhere"]
