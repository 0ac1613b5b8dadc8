"""Serve the pipeline on a cron schedule from a real Prefect server.

Scheduling needs a real server (the ephemeral one never runs scheduled work): when
``PREFECT_API_URL`` is unset, a local ``prefect server start`` is launched and used.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_API = "http://127.0.0.1:4200/api"


def server_healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def ensure_server(api_url: str = DEFAULT_API, timeout_s: float = 120.0,
                  log_path: Path | None = None, detach: bool = False) -> subprocess.Popen | None:
    """Start ``prefect server start`` unless one already answers at ``api_url``; ``detach``: in a
    session of its own, so that it outlives this process (``molgnn ui``)."""
    if server_healthy(api_url):
        return None
    host_port = api_url.split("://", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    # the UI is a static app that calls the API at PREFECT_UI_API_URL; left unset it assumes port 4200
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": f"http://{host}:{port}/api"}
    log = open(log_path or os.devnull, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", port],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=detach)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}; see {log_path}")
        if server_healthy(api_url):
            return proc
        time.sleep(1)
    proc.terminate()
    raise TimeoutError(f"prefect server did not answer at {api_url} within {timeout_s:.0f} s")


def validate_cron(cron: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError as exc:
        raise ValueError(f"not a valid cron expression: {cron!r}") from exc


def serve_pipeline(cron: str, params_path: str, name: str = "molgnn-scheduled") -> None:
    """Register the deployment and run scheduled flow runs until interrupted."""
    validate_cron(cron)
    api_url = os.environ.setdefault("PREFECT_API_URL", DEFAULT_API)
    server = ensure_server(api_url, log_path=Path(params_path).resolve().parent / "prefect-server.log")
    from flows.pipeline import pipeline  # after PREFECT_API_URL is set

    ui = api_url.removesuffix("/api")
    print(f"Serving deployment 'molgnn-pipeline/{name}' on cron {cron!r}. Prefect UI: {ui}")
    try:
        pipeline.serve(name=name, cron=cron, parameters={"params_path": str(Path(params_path).resolve())},
                       pause_on_shutdown=False)
    finally:
        if server is not None:
            server.terminate()
