"""Serve the pipeline, the screening flow and the design loop on a cron schedule (in a stated time zone) from a real
Prefect server, each flow its own deployment with its own parameters.

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
    """``GET {api_url}/health`` answers 200 (a Prefect API, or the MLflow UI's address)."""
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


FLOWS = ("pipeline", "screen", "design")


def validate_timezone(tz: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"not an IANA time zone: {tz!r} (e.g. UTC, Europe/Berlin, America/New_York)") from None


def build_deployments(cron: str, params_path: str, name: str = "molgnn-scheduled", flows: tuple[str, ...] = ("pipeline",),
                      library: str | None = None, models: str = "runs/latest", timezone: str = "UTC") -> list:
    """One deployment per flow, each on ``cron`` in ``timezone`` with its own parameters: the pipeline
    and the design loop reread ``params_path`` at every run, the screen flow rereads ``library``."""
    validate_cron(cron)
    validate_timezone(timezone)
    unknown = set(flows) - set(FLOWS)
    if unknown:
        raise ValueError(f"unknown flow(s) {sorted(unknown)}: choose from {list(FLOWS)}")
    if "screen" in flows and not library:
        raise ValueError("the screen flow needs --library (a file path, read afresh at every run)")
    from prefect.schedules import Cron

    params_path = str(Path(params_path).resolve())
    deployments = []
    if "pipeline" in flows:
        from flows.pipeline import pipeline

        deployments.append(pipeline.to_deployment(name=name, schedules=[Cron(cron, timezone=timezone)],
                                                  parameters={"params_path": params_path}))
    if "screen" in flows:
        from flows.screening import screen_flow

        deployments.append(screen_flow.to_deployment(
            name=f"{name}-screen", schedules=[Cron(cron, timezone=timezone)],
            parameters={"library": str(Path(library).resolve()), "params_path": params_path, "models": models}))
    if "design" in flows:
        from flows.design import design

        deployments.append(design.to_deployment(name=f"{name}-design", schedules=[Cron(cron, timezone=timezone)],
                                                parameters={"params_path": params_path}))
    return deployments


def serve_flows(cron: str, params_path: str, name: str = "molgnn-scheduled", flows: tuple[str, ...] = ("pipeline",),
                library: str | None = None, models: str = "runs/latest", timezone: str = "UTC") -> None:
    """Register the deployments and run their scheduled flow runs until interrupted."""
    api_url = os.environ.setdefault("PREFECT_API_URL", DEFAULT_API)
    validate_timezone(timezone)
    server = ensure_server(api_url, log_path=Path(params_path).resolve().parent / "prefect-server.log")
    from prefect import serve

    deployments = build_deployments(cron, params_path, name, flows, library, models, timezone)
    ui = api_url.removesuffix("/api")
    for d in deployments:
        print(f"Serving deployment '{d.flow_name}/{d.name}' on cron {cron!r} ({timezone}) "
              f"with parameters {d.parameters}")
    print(f"Prefect UI: {ui}/deployments")
    try:
        serve(*deployments, print_starting_message=False)
    finally:
        if server is not None:
            server.terminate()
