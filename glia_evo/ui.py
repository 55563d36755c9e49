"""`glia-evo ui DIR`: the MLflow UI on 127.0.0.1 over one run's tracking store."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def command(run_dir: Path, port: int) -> list[str]:
    db = (run_dir / "mlflow.db").resolve()
    artifacts = (run_dir / "mlartifacts").resolve()
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
            "--default-artifact-root", artifacts.as_uri(), "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


def wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def serve(run_dir: Path, port: int) -> int:
    if not (run_dir / "mlflow.db").exists():
        raise FileNotFoundError(f"{run_dir} has no MLflow store (mlflow.db): was it run with "
                                f"tracking on?")
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(command(run_dir, port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        if not wait_until_up(url, proc):
            err = (proc.stderr.read() if proc.poll() is not None else "") or "no answer"
            last = [l for l in err.splitlines() if l.strip()][-1:] or ["no answer"]
            print(f"glia-evo: error: the MLflow UI did not start on {url}: {last[0]}",
                  file=sys.stderr)
            return 1
        print(f"MLflow UI for {run_dir}: {url}  (Ctrl-C to stop)", flush=True)
        proc.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
