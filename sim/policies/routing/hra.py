"""Head-Room Admission (Glia's router, written from the paper's description).

Keep the global queue sorted by (prompt tokens, arrival). A request fits a replica if, after
reserving ceil(prompt * (1 + headroom) / block_size) blocks for it, and ceil(sum of prefills *
(1 + headroom) / block_size) for that replica's own pending requests, at least a fraction
`min_free` of the blocks (rounded down) stays free. Send the head request to the fitting replica
with the lowest projected use (ties: shorter queue). If it fits nowhere, stop and hold it (and
everything behind it) in the global queue.

A pending request's prefill is its prompt plus the tokens it generated before an eviction: a
restarted request prefills them all again (what the paper's code reads as `num_prefill_tokens`,
which Vidur's `Request.restart()` sets to the tokens processed so far).
"""
import math

KNOBS = {"headroom": (0.6, 0.0, 2.0), "min_free": (0.03, 0.0, 0.2)}


def route(queue, replicas, now, knobs):
    grow = 1.0 + knobs["headroom"]
    ready = [r for r in replicas if r.state == "ready"]
    left = {}
    waiting = {}
    for r in ready:
        prefill = sum(p.prompt_tokens + p.generated_tokens for p in r.pending)
        left[r.id] = r.free_blocks - math.ceil(prefill * grow / r.block_size)
        waiting[r.id] = r.num_pending + r.num_active
    out = []
    for req in sorted(queue, key=lambda q: (q.prompt_tokens, q.arrival_time, q.id)):
        best = None
        for r in ready:
            need = math.ceil(req.prompt_tokens * grow / r.block_size)
            after = left[r.id] - need
            if after >= int(knobs["min_free"] * r.num_blocks):
                key = (1.0 - after / r.num_blocks, waiting[r.id], r.id)
                if best is None or key < best[0]:
                    best = (key, r.id, need)
        if best is None:
            break
        out.append((req.id, best[1]))
        left[best[1]] = left[best[1]] - best[2]
        waiting[best[1]] = waiting[best[1]] + 1
    return out
