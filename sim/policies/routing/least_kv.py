"""Least KV use: send each request to the replica with the most free KV blocks.

Blocks already promised to a replica's pending requests (their whole prompts) count as used.
"""
import math


def route(queue, replicas, now, knobs):
    free = {}
    for r in replicas:
        if r.state == "ready":
            promised = sum(math.ceil(p.prompt_tokens / r.block_size) for p in r.pending)
            free[r.id] = (r.free_blocks - promised, r.block_size)
    out = []
    for req in queue:
        best = max(free, key=lambda i: (free[i][0], -i))
        out.append((req.id, best))
        blocks, bs = free[best]
        free[best] = (blocks - math.ceil(req.prompt_tokens / bs), bs)
    return out
