"""An HTTP routing service around a policy exported by `glia-evo export` (FastAPI + uvicorn).

An API gateway in front of LLM-serving replicas asks it where to send requests:

    POST /route   {"now": 12.5,
                   "queue":    [{"id": "r-17", "arrival_time": 12.4, "prompt_tokens": 812}],
                   "replicas": [{"id": 0, "num_pending": 1, "num_active": 7,
                                 "num_blocks": 8000, "block_size": 16, "free_blocks": 2100},
                                {"id": 1, "state": "starting"}],
                   "knobs": {}}                                   (optional)
    ->            {"decisions": [{"request": "r-17", "replica": 0}], "waiting": []}

`waiting` lists the queued requests the policy held back (a policy may wait for capacity; with
no ready replica every request waits). The fields are the exported module's plain-data format
(its docstring lists them); a field the policy needs and the request lacks is a 422 naming it.

    glia-evo export runs/routing --out policy.py
    python examples/router_service/service.py --policy policy.py --port 8080

It listens on 127.0.0.1 unless --host says otherwise. GET /health answers {"ok": true, ...}.
"""
import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field


class RouteRequest(BaseModel):
    now: float
    queue: list[dict[str, Any]] = Field(default_factory=list)
    replicas: list[dict[str, Any]] = Field(default_factory=list)
    knobs: Optional[dict[str, float]] = None


def load_policy(path):
    """Import an exported module (standard library only: no glia-evo needed)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location("exported_policy", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"not a Python module: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "decide") or not hasattr(module, "route"):
        raise SystemExit(f"{path} is not an exported routing policy (no decide/route)")
    return module


def make_app(policy) -> FastAPI:
    app = FastAPI(title="glia-evo router", version="1")
    name = (policy.__doc__ or "").splitlines()[0] if policy.__doc__ else "exported policy"

    @app.get("/health")
    def health() -> dict:
        return {"ok": True, "policy": name, "knobs": policy.knobs_for()}

    @app.post("/route")
    def route(body: RouteRequest) -> dict:
        try:
            pairs = policy.decide(body.queue, body.replicas, body.now, knobs=body.knobs)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=f"{type(exc).__name__}: {exc}") from None
        sent = {rid for rid, _ in pairs}
        known = {r.get("id") for r in body.replicas}
        bad = [rep for _, rep in pairs if rep not in known]
        if bad:
            raise HTTPException(status_code=500, detail=f"the policy chose unknown replicas {bad}")
        return {"decisions": [{"request": rid, "replica": rep} for rid, rep in pairs],
                "waiting": [q.get("id") for q in body.queue if q.get("id") not in sent]}

    return app


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=os.environ.get("GLIA_EVO_POLICY", "policy.py"),
                        help="an exported module (default: $GLIA_EVO_POLICY or policy.py)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    import uvicorn
    uvicorn.run(make_app(load_policy(args.policy)), host=args.host, port=args.port,
                log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
