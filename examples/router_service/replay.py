"""Replay a trace through the routing service, as a gateway in front of a toy cluster would.

Each request of the CSV (`arrived_at,num_prefill_tokens,num_decode_tokens`) arrives at its time;
the gateway then asks POST /route where to send every waiting request, given each replica's
current load, and applies the answer. A toy cluster model stands in for real servers: a replica
works on its requests one token step at a time (a request is done after its decode tokens at
`step_s` each; a prefill costs `prefill_s` per 1000 tokens) and holds `num_blocks` KV blocks of
`block_size` tokens. Standard library only.

    python examples/router_service/replay.py --url http://127.0.0.1:8080 --trace trace.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import urllib.request
from dataclasses import dataclass, field


@dataclass
class Replica:
    id: int
    num_blocks: int = 2000
    block_size: int = 16
    running: dict = field(default_factory=dict)      # request id -> (finish time, blocks)

    def view(self, now: float) -> dict:
        self.running = {r: v for r, v in self.running.items() if v[0] > now}
        used = sum(b for _, b in self.running.values())
        return {"id": self.id, "state": "ready", "num_pending": 0,
                "num_active": len(self.running), "num_blocks": self.num_blocks,
                "block_size": self.block_size, "used_blocks": min(used, self.num_blocks)}


def read_trace(path: str, limit: int | None = None) -> list[dict]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))[:limit]
    t0 = float(rows[0]["arrived_at"]) if rows else 0.0
    return [{"id": i, "arrival_time": float(r["arrived_at"]) - t0,
             "prompt_tokens": int(float(r["num_prefill_tokens"])),
             "decode": int(float(r["num_decode_tokens"]))} for i, r in enumerate(rows)]


def ask(url: str, body: dict, timeout: float = 10.0) -> dict:
    req = urllib.request.Request(url + "/route", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def replay(url: str, requests: list[dict], replicas: int = 4, step_s: float = 0.02,
           prefill_s: float = 0.05) -> dict:
    """Route every request through the service; returns where each went and when."""
    cluster = [Replica(i) for i in range(replicas)]
    waiting: list[dict] = []
    placed: dict = {}
    calls = 0
    for req in requests:
        now = req["arrival_time"]
        waiting.append(req)
        views = [r.view(now) for r in cluster]
        answer = ask(url, {"now": now, "replicas": views,
                           "queue": [{k: w[k] for k in ("id", "arrival_time", "prompt_tokens")}
                                     for w in waiting]})
        calls += 1
        by_id = {w["id"]: w for w in waiting}
        for d in answer["decisions"]:
            w = by_id.pop(d["request"])
            rep = cluster[d["replica"]]
            blocks = math.ceil((w["prompt_tokens"] + w["decode"]) / rep.block_size)
            finish = now + prefill_s * w["prompt_tokens"] / 1000 + step_s * w["decode"]
            rep.running[w["id"]] = (finish, blocks)
            placed[w["id"]] = {"replica": d["replica"], "queued_s": now - w["arrival_time"]}
        waiting = list(by_id.values())
    per_replica = {r.id: sum(1 for p in placed.values() if p["replica"] == r.id)
                   for r in cluster}
    return {"requests": len(requests), "routed": len(placed), "still_waiting": len(waiting),
            "calls": calls, "per_replica": per_replica,
            "mean_queued_s": (sum(p["queued_s"] for p in placed.values()) / len(placed))
            if placed else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--trace", required=True)
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N rows")
    parser.add_argument("--replicas", type=int, default=4)
    args = parser.parse_args(argv)
    print(json.dumps(replay(args.url, read_trace(args.trace, args.limit), args.replicas),
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
