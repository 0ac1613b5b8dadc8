"""`molgnn ui` in a real browser: it starts a persistent Prefect server and the MLflow UI, `molgnn
run` sends its flow run there, and both UIs (in headless Chromium) list the run just made."""
from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(root, env, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "molgnn.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_ui_servers_show_the_run_just_made(tmp_path, tiny_params):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no Chromium on this machine (make test installs Debian's chromium where it runs as root)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install adds it)")
    from playwright.sync_api import sync_playwright

    params = copy.deepcopy(tiny_params)
    params["generate"]["models"] = ["vae"]
    params["generate"]["guidance"]["enabled"] = False
    params["data"]["limit"] = 30
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")    # the persistent server's database, private here
    pp, mp = free_port(), free_port()
    try:
        up = cli(tmp_path, env, "ui", "--prefect-port", str(pp), "--mlflow-port", str(mp))
        assert up.returncode == 0, up.stderr
        assert f"http://127.0.0.1:{pp}/runs" in up.stdout and f"http://127.0.0.1:{mp}/#/experiments/" in up.stdout
        run = cli(tmp_path, env, "run", "--params", "params.yaml")
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"http://127.0.0.1:{pp}/api" in run.stderr        # the flow run went to the ui's server
        again = cli(tmp_path, env, "ui", "--prefect-port", str(pp), "--mlflow-port", str(mp))   # finds them
        assert again.returncode == 0, again.stderr
        mlflow_runs = next(line.split()[-1] for line in again.stdout.splitlines() if line.startswith("MLflow runs"))
        newest = next(line.split()[-1] for line in again.stdout.splitlines() if line.startswith("newest pipeline run"))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{pp}/runs")
                page.get_by_text("molgnn-pipeline").first.wait_for(timeout=60_000)
                page.goto(mlflow_runs)
                page.get_by_text("Training runs").first.wait_for(timeout=60_000)   # the model-training view
                page.get_by_role("link", name="pipeline", exact=True).first.wait_for(timeout=60_000)
                page.goto(newest)
                page.get_by_text(newest.rsplit("/", 1)[1]).first.wait_for(timeout=60_000)
            finally:
                browser.close()
    finally:
        down = cli(tmp_path, env, "ui", "--stop", timeout=120)
    assert down.returncode == 0 and "prefect server" in down.stdout and "mlflow ui" in down.stdout
    assert not (tmp_path / "runs" / "ui.json").exists()
