"""The two web UIs a researcher uses, MLflow and JupyterLab, rendered by a real headless Chromium.

    .venv/bin/python -m pytest tests/test_web_ui.py -q      # ~50 s; skips itself without Chromium

Chromium runs once per page (`--headless --dump-dom` with a virtual-time budget): it loads the single-page app,
runs its JavaScript and prints the DOM, which the tests read as the text a person would see. Virtual time stands
still while requests are in flight, so a slow machine renders the same page, only later. `make test` installs the
Debian package `chromium` when no browser is on PATH and it can (root with apt-get); CHROMIUM=/path/to/chrome
picks another Chromium-based browser.

- MLflow (conftest's `mlflow_uri`): a run logged the way the notebook logs it (notebooks/sft.py) appears on the
  front page's experiment list, in its experiment's runs table, and its run page shows its metrics and params.
- MLflow as the compose service runs it (services/mlflow/entrypoint.sh with the service's command from
  docker-compose.yml, `--allowed-hosts` included): the UI lists runs for a browser at localhost:5000 (the SSH
  tunnel) and at another name the allow-list holds; any other Host gets MLflow's DNS-rebinding 403, not the UI.
- JupyterLab as the jupyter service runs it (token from JUPYTER_TOKEN, root dir from the service's command):
  without the token (or with a wrong one) the login page, with it notebooks/sft_training.ipynb rendered, its
  kernel found, and the committed file left as it was.
"""

from __future__ import annotations

import fnmatch
import html.parser
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from tests.conftest import REPO_ROOT
from tests.mlflow_server import free_port, stop, wait_until_answers

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NOTEBOOK = REPO_ROOT / "notebooks" / "sft_training.ipynb"
VENV_BIN = Path(sys.executable).parent
# Without these Chromium phones home (updates, sync, QUIC probes) and, with no network, waits on it.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def find_browser() -> str | None:
    """$CHROMIUM (a path or a name on PATH), else the first Chromium-based browser on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


BROWSER = find_browser()
NO_BROWSER = (
    f"CHROMIUM={os.environ['CHROMIUM']} is not an executable"
    if os.environ.get("CHROMIUM")
    else f"no Chromium on PATH (looked for {', '.join(BROWSERS)}): `make test` installs Debian's `chromium` when "
    "run as root with apt-get; or set CHROMIUM=/path/to/chrome"
)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)]


class _VisibleText(html.parser.HTMLParser):
    """The text of a DOM a person could see (no script, style or noscript), and the text of each <h1>."""

    HIDDEN = {"script", "style", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.h1: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in {"br", "img", "input", "meta", "link", "hr", "wbr", "source", "col", "area", "base"}:
            self._stack.append(tag)
        if tag == "h1":
            self.h1.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._stack:
            while self._stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self.HIDDEN.isdisjoint(self._stack):
            self.parts.append(data)
            if "h1" in self._stack:
                self.h1[-1] += data


@dataclass
class Page:
    dom: str
    text: str  # visible text, whitespace collapsed
    h1: list[str]


def render(url: str, profile: Path, *, hosts: dict[str, int] | None = None, budget_ms: int = 10_000) -> Page:
    """Load `url` in a fresh headless Chromium profile and return the rendered page.

    `hosts` maps "name:port" to a port on 127.0.0.1 (Chromium's --host-resolver-rules), so the browser sends the
    Host header a user's browser would (e.g. mlflow:5000) while the server listens on a free loopback port.
    """
    args = [BROWSER, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
    if hosts:
        args.append("--host-resolver-rules=" + ", ".join(f"MAP {h} 127.0.0.1:{p}" for h, p in hosts.items()))
    proc = subprocess.Popen(
        [*args, "--dump-dom", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        dom, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError(f"Chromium did not finish rendering {url} within 180 s") from None
    if proc.returncode != 0 or "<html" not in dom:
        raise AssertionError(f"Chromium failed on {url} (exit {proc.returncode}):\n{err[-3000:]}")
    parser = _VisibleText()
    parser.feed(dom)
    return Page(dom=dom, text=" ".join(" ".join(parser.parts).split()), h1=[" ".join(h.split()) for h in parser.h1])


@pytest.fixture
def browse(tmp_path: Path):
    """render() with a new, empty browser profile per page (no cookies or local storage carried over)."""
    count = itertools.count()

    def _browse(url: str, **kwargs) -> Page:
        return render(url, tmp_path / f"profile-{next(count)}", **kwargs)

    return _browse


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """docker-compose.yml's services as the real Compose binary renders them from .env.example (+ the tokens)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path_factory.mktemp("compose-home"))}
    proc = subprocess.run(
        [
            str(VENV_BIN / "docker-compose"),
            "--project-directory",
            str(REPO_ROOT),
            "--env-file",
            str(REPO_ROOT / ".env.example"),
            "-f",
            str(REPO_ROOT / "docker-compose.yml"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "JUPYTER_TOKEN": "rendered-only", "RAY_AUTH_TOKEN": "rendered-only"},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"]


# --- MLflow: a run the notebook logged ------------------------------------------------------------------------

SFT_EXPERIMENT = "pytest-web-ui"
SFT_RUN = "sft-web-ui-check"
LOG_LIKE_THE_NOTEBOOK = """
import sys
import mlflow
from notebooks import sft

cfg = sft.SFTRunConfig.from_notebook(output_dir=sys.argv[1], data_dir=sys.argv[1], mlflow_experiment=sys.argv[2],
    run_name=sys.argv[3], learning_rate=3e-5, system_metrics_interval_s=1.0)
run = sft.start_mlflow_run(cfg)
for step, loss in enumerate([1.91, 1.24, 0.83], start=1):
    mlflow.log_metric("loss", loss, step=step)
mlflow.log_metrics({"val_after/accuracy_gsm8k_strict": 0.375, "val_after/accuracy_gsm8k_flexible": 0.5})
sft.end_mlflow_run()
print(run.info.experiment_id, run.info.run_id)
"""


@pytest.fixture(scope="module")
def sft_run(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One run logged through notebooks/sft.py's own start/end functions, in a separate process like the kernel."""
    work = tmp_path_factory.mktemp("web-ui-run")
    proc = subprocess.run(
        [sys.executable, "-c", LOG_LIKE_THE_NOTEBOOK, str(work), SFT_EXPERIMENT, SFT_RUN],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    experiment_id, run_id = proc.stdout.split()[-2:]
    return SimpleNamespace(uri=mlflow_uri, experiment_id=experiment_id, run_id=run_id)


def test_mlflow_front_page_lists_the_experiment(sft_run, browse):
    page = browse(f"{sft_run.uri}/")
    assert "MLflow" in page.text
    assert SFT_EXPERIMENT in page.text


def test_mlflow_experiment_page_lists_the_notebook_run(sft_run, browse):
    # The "Model training" view (MLflow 3 opens experiments in its GenAI view, which shows traces, not runs).
    page = browse(f"{sft_run.uri}/#/experiments/{sft_run.experiment_id}?workflowType=machine_learning")
    assert SFT_EXPERIMENT in page.text
    assert SFT_RUN in page.text and "1 matching run" in page.text
    assert "Request error" not in page.text


def test_mlflow_run_page_shows_metrics_and_params(sft_run, browse):
    page = browse(f"{sft_run.uri}/#/experiments/{sft_run.experiment_id}/runs/{sft_run.run_id}")
    assert SFT_RUN in page.text and "Status Finished" in page.text
    # the metrics table: name, then latest value
    assert "loss 0.83" in page.text and "val_after/accuracy_gsm8k_strict 0.375" in page.text
    assert "sft.learning_rate 3e-05" in page.text  # the parameters table
    assert "stage : sft" in page.text  # the notebook's tags


# --- MLflow: the compose service's own command --------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_mlflow(services: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """services/mlflow/entrypoint.sh + the compose command (port, stores moved to tmp), one run logged into it."""
    from mlflow import MlflowClient

    service = services["mlflow"]
    root = tmp_path_factory.mktemp("mlflow-service")
    port = free_port()
    args = [
        arg.replace("--host=0.0.0.0", "--host=127.0.0.1").replace("--port=5000", f"--port={port}")
        for arg in service["command"]
    ]
    args = [arg.replace("=/mlflow/", f"={root}/") for arg in args]
    assert "--host=127.0.0.1" in args and f"--port={port}" in args
    allowed = next(arg for arg in args if arg.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    env = {
        **os.environ,
        **service["environment"],
        "MLFLOW_DATA_DIR": str(root),
        "MLFLOW_DB_HOST": "mlflow-db.invalid",  # no postgres profile: SQLite in MLFLOW_DATA_DIR
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",  # the test environment's mlflow
    }
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", str(REPO_ROOT / "services" / "mlflow" / "entrypoint.sh"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{uri}/health", proc, log)
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("compose-ui")
        run = client.create_run(experiment_id, run_name="compose-browser-check")
        client.log_metric(run.info.run_id, "acc", 0.5)
        client.set_terminated(run.info.run_id)
        yield SimpleNamespace(port=port, allowed=allowed, experiment_id=experiment_id, log=log)
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "host",
    [
        "localhost:5000",  # the README's SSH tunnel (default BIND_ADDRESS=127.0.0.1)
        "mlflow:5000",  # stands for every non-loopback name in MLFLOW_ALLOWED_HOSTS / MLFLOW_CORS_ALLOWED_ORIGINS
    ],
)
def test_compose_mlflow_ui_lists_runs_for_a_browser_at_an_allowed_host(compose_mlflow, browse, host):
    assert any(fnmatch.fnmatchcase(host, pattern) for pattern in compose_mlflow.allowed), compose_mlflow.allowed
    page = browse(
        f"http://{host}/#/experiments/{compose_mlflow.experiment_id}?workflowType=machine_learning",
        hosts={host: compose_mlflow.port},
    )
    assert "compose-ui" in page.text  # the page itself (GET requests) rendered
    refused = [line for line in compose_mlflow.log.read_text().splitlines() if "Blocked" in line or " 403 " in line]
    assert "Request error" not in page.text, "\n".join(refused[-6:])
    assert "compose-browser-check" in page.text


def test_compose_mlflow_refuses_a_host_outside_the_allow_list(compose_mlflow, browse):
    host = "attacker.example:5000"  # what a DNS-rebinding page would send
    assert not any(fnmatch.fnmatchcase(host, pattern) for pattern in compose_mlflow.allowed)
    page = browse(f"http://{host}/#/experiments", hosts={host: compose_mlflow.port})
    assert "Invalid Host header" in page.text
    assert "compose-ui" not in page.text and "Experiments" not in page.text


# --- JupyterLab as the jupyter service runs it ---------------------------------------------------------------


@pytest.fixture(scope="module")
def jupyter_lab(services: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`jupyter lab` from the venv with the service's command (/workspace = the repo) and JUPYTER_TOKEN."""
    service = services["jupyter"]
    assert service["working_dir"] == "/workspace"
    assert service["command"][:2] == ["jupyter", "lab"]
    # The service's own arguments, on the repo and a loopback port instead of /workspace and 0.0.0.0:8888.
    args = [
        arg.replace("/workspace", str(REPO_ROOT))
        for arg in service["command"][2:]
        if not arg.startswith(("--ServerApp.ip=", "--ServerApp.port="))
    ]
    assert f"--ServerApp.root_dir={REPO_ROOT}" in args
    state = tmp_path_factory.mktemp("jupyter-state")
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,  # what the service passes; jupyter_server reads it itself
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTER_CONFIG_DIR": str(state / "config"),  # no user settings or saved workspaces leak in
        "JUPYTER_DATA_DIR": str(state / "data"),
        "IPYTHONDIR": str(state / "ipython"),
    }
    port = free_port()
    cmd = [str(VENV_BIN / "jupyter"), "lab", *args, "--no-browser", "--ip=127.0.0.1", f"--port={port}"]
    # Opening a notebook makes JupyterLab save a checkpoint next to it: keep that out of the working tree.
    cmd.append(f"--FileCheckpoints.checkpoint_dir={state / 'checkpoints'}")
    if os.geteuid() == 0:  # the image runs it as an unprivileged user; CI containers often run tests as root
        cmd.append("--allow-root")
    log = state / "jupyter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(f"{url}/api", proc, log)  # the service's healthcheck
        yield SimpleNamespace(url=url, token=token, log=log)
    finally:
        stop(proc)  # SIGTERM: JupyterLab shuts its kernels down first


def first_heading() -> str:
    """The notebook's title: the first line of its first markdown cell, without the '#'."""
    first = next(c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "markdown")
    line = first.source.splitlines()[0]
    assert line.startswith("# "), line
    return line.removeprefix("# ").strip()


@pytest.mark.parametrize("query", ["", "?token=not-the-token"])
def test_jupyter_without_the_token_shows_the_login_page(jupyter_lab, browse, query):
    page = browse(f"{jupyter_lab.url}/lab/tree/notebooks/sft_training.ipynb{query}")
    assert "Password or token" in page.text
    assert first_heading() not in page.text and "JupyterLab" not in page.text


def test_jupyter_with_the_token_opens_the_sft_notebook(jupyter_lab, browse):
    before = NOTEBOOK.read_bytes()
    page = browse(f"{jupyter_lab.url}/lab/tree/notebooks/sft_training.ipynb?token={jupyter_lab.token}")
    assert "Password or token" not in page.text
    # the markdown cell rendered (an <h1>, followed by its "¶" anchor link), not shown as source
    assert first_heading() in [h.removesuffix("¶").strip() for h in page.h1]
    assert "sft_training.ipynb" in page.text
    assert "Python 3 (ipykernel)" in page.text and "Select Kernel" not in page.text  # its kernelspec resolves
    assert NOTEBOOK.read_bytes() == before, "opening the notebook must not rewrite the committed file"
