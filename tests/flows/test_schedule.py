"""`molgnn schedule` on a real Prefect server: the deployment registers and a run lands on schedule.

Runs the real command in a subprocess (it starts its own `prefect server start` on a free port with
a private PREFECT_HOME), waits for the cron run of the minute to complete, then stops everything.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> list | dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_schedule_serves_and_a_run_lands_on_cron(tmp_path, tiny_params):
    from molgnn.tracking.dvc_data import data_md5

    tiny_params = copy.deepcopy(tiny_params)    # the fixture is session-wide: edits must not leak

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    tiny_params["generate"]["models"] = ["vae"]
    tiny_params["generate"]["guidance"]["enabled"] = False   # guidance steers the diffusion model only
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           # the server's scheduler wakes every 60 s by default; the test cannot wait that long
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"}
    proc = subprocess.Popen([sys.executable, "-m", "molgnn.cli", "schedule", "--cron", "* * * * *",
                             "--params", str(tmp_path / "params.yaml"), "--name", "test-cron"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 360
        states: list[str] = []
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"molgnn schedule exited: {proc.stdout.read().decode()[-3000:]}")
            try:
                deployments = post(f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["test-cron"]}}})
                if deployments:
                    runs = post(f"{api}/flow_runs/filter",
                                {"flow_runs": {"deployment_id": {"any_": [deployments[0]["id"]]}}})
                    states = [r["state_type"] for r in runs]
                    if "COMPLETED" in states:
                        break
                    failed = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
                    if failed:
                        os.killpg(proc.pid, signal.SIGINT)
                        out = proc.communicate(timeout=30)[0].decode()
                        pytest.fail(f"scheduled run failed: {failed[0]['state']['message']}\n{out[-6000:]}")
            except OSError:
                pass  # server still starting
            time.sleep(3)
        else:
            pytest.fail(f"no scheduled run completed within the time limit; states seen: {states}")
        assert deployments[0]["schedules"][0]["schedule"]["cron"] == "* * * * *"
        assert data_md5(tmp_path), "the scheduled run versioned the data"
        assert (tmp_path / "runs/latest/screen/candidates.csv").exists()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_schedule_refuses_bad_params_before_serving(tmp_path, tiny_params):
    tiny_params = copy.deepcopy(tiny_params)
    tiny_params["generate"]["models"] = ["vae"]     # guidance stays enabled: a cross-field error
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    res = subprocess.run([sys.executable, "-m", "molgnn.cli", "schedule", "--cron", "* * * * *",
                          "--params", str(tmp_path / "params.yaml")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "generate.guidance.enabled" in res.stderr
    assert "Serving" not in res.stdout


def test_each_flow_is_its_own_deployment_on_the_stated_time_zone(tmp_path, tiny_params):
    from flows.schedule import build_deployments

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    (tmp_path / "library.csv").write_text("smiles\nCCO\n")
    deps = build_deployments("0 2 * * *", str(tmp_path / "params.yaml"), "nightly", ("pipeline", "screen", "design"),
                             library=str(tmp_path / "library.csv"), timezone="Europe/Berlin")
    assert [(d.flow_name, d.name) for d in deps] == [("molgnn-pipeline", "nightly"), ("molgnn-screen", "nightly-screen"),
                                                     ("molgnn-design", "nightly-design")]
    for d in deps:
        assert d.schedules[0].schedule.cron == "0 2 * * *" and d.schedules[0].schedule.timezone == "Europe/Berlin"
    assert deps[0].parameters == {"params_path": str(tmp_path / "params.yaml")}
    assert deps[1].parameters["library"] == str(tmp_path / "library.csv")
    assert deps[2].parameters == {"params_path": str(tmp_path / "params.yaml")}   # design: rereads params.yaml
    with pytest.raises(ValueError, match="IANA"):
        build_deployments("0 2 * * *", str(tmp_path / "params.yaml"), timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="--library"):
        build_deployments("0 2 * * *", str(tmp_path / "params.yaml"), flows=("screen",))
