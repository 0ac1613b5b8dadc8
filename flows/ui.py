"""``molgnn ui``: a persistent local Prefect server and the MLflow UI, found again by ``molgnn run``.

Both run detached (they outlive the command) and are recorded in ``runs/ui.json``; while that
Prefect server answers, ``molgnn run`` sends its flow runs there instead of to a temporary server,
so they stay visible. ``molgnn ui --stop`` ends both.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.schedule import ensure_server, server_healthy

UI_FILE = "ui.json"       # under runs/
HOST = "127.0.0.1"


@dataclass
class UiServers:
    prefect_url: str
    mlflow_url: str
    prefect_pid: int = 0       # 0: found already running, not started by molgnn ui
    mlflow_pid: int = 0

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_url}/api"


def _record(root: Path) -> Path:
    from molgnn.stages.run_folder import RUNS_DIR

    return root / RUNS_DIR / UI_FILE


def _start_mlflow(url: str, store_uri: str, log: Path, timeout_s: float = 90.0) -> int:
    port = url.rsplit(":", 1)[1]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri,
                                 "--host", HOST, "--port", port], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with code {proc.returncode}; see {log}")
        if server_healthy(url):
            return proc.pid
        time.sleep(1)
    proc.terminate()
    raise TimeoutError(f"mlflow ui did not answer at {url} within {timeout_s:.0f} s; see {log}")


def start_ui(root: Path, store_uri: str, prefect_port: int = 4200, mlflow_port: int = 5000) -> UiServers:
    """Start (or find, when they already answer) the Prefect server and the MLflow UI."""
    record = _record(root)
    record.parent.mkdir(parents=True, exist_ok=True)
    servers = UiServers(f"http://{HOST}:{prefect_port}", f"http://{HOST}:{mlflow_port}")
    proc = ensure_server(servers.prefect_api, log_path=record.parent / "prefect-server.log", detach=True)
    servers.prefect_pid = proc.pid if proc is not None else 0
    if not server_healthy(servers.mlflow_url):
        servers.mlflow_pid = _start_mlflow(servers.mlflow_url, store_uri, record.parent / "mlflow-ui.log")
    previous = find_ui(root)   # keep the pids of servers an earlier `molgnn ui` started
    if previous is not None:
        if previous.prefect_url == servers.prefect_url and not servers.prefect_pid:
            servers.prefect_pid = previous.prefect_pid
        if previous.mlflow_url == servers.mlflow_url and not servers.mlflow_pid:
            servers.mlflow_pid = previous.mlflow_pid
    tmp = record.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(servers), indent=2))
    os.replace(tmp, record)
    return servers


def find_ui(root: Path) -> UiServers | None:
    """The servers ``molgnn ui`` recorded for this folder, or None."""
    try:
        return UiServers(**json.loads(_record(root).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def prefect_api_for_run(root: Path) -> str | None:
    """The recorded Prefect server's API address while it answers (``molgnn run`` uses it)."""
    servers = find_ui(root)
    return servers.prefect_api if servers is not None and server_healthy(servers.prefect_api) else None


def stop_ui(root: Path) -> list[str]:
    """Stop the servers ``molgnn ui`` started here; what was stopped."""
    servers = find_ui(root)
    stopped = []
    if servers is None:
        return stopped
    for name, pid in (("prefect server", servers.prefect_pid), ("mlflow ui", servers.mlflow_pid)):
        if pid and _stop_group(pid):
            stopped.append(f"{name} (pid {pid})")
    _record(root).unlink(missing_ok=True)
    return stopped


def _stop_group(pid: int, grace_s: float = 20.0) -> bool:
    """SIGTERM the server's session (the server and its workers), SIGKILL it after ``grace_s``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.time() + grace_s
    while time.time() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def links(servers: UiServers, experiment_id: str | None, pipeline_run: str | None = None) -> dict[str, str]:
    """Direct addresses: the Prefect flow-run list, the MLflow experiment's runs (and the newest run)."""
    out = {"Prefect flow runs": f"{servers.prefect_url}/runs",
           "MLflow runs": f"{servers.mlflow_url}/#/experiments/{experiment_id or 0}/runs",
           "MLflow models": f"{servers.mlflow_url}/#/models"}
    if pipeline_run:
        out["newest pipeline run"] = f"{servers.mlflow_url}/#/experiments/{experiment_id}/runs/{pipeline_run}"
    return out
