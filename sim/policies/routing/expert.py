"""Human expert router: shortest prompt first, with a cap on committed KV blocks per replica.

A replica's committed blocks are those its active and pending requests hold or will hold
(by max(prompt, processed) tokens). Requests are taken shortest prompt first and sent to the
least committed replica that stays under `cap` of its blocks; the rest wait in the global queue.
"""
import math

KNOBS = {"cap": (0.94, 0.5, 1.0)}


def route(queue, replicas, now, knobs):
    committed = {}
    ready = [r for r in replicas if r.state == "ready"]
    for r in ready:
        held = r.active + r.pending
        committed[r.id] = sum(math.ceil(max(q.prompt_tokens, q.processed_tokens) / r.block_size)
                              for q in held)
    out = []
    for req in sorted(queue, key=lambda q: (q.prompt_tokens, q.arrival_time, q.id)):
        best = None
        for r in ready:
            need = math.ceil(req.prompt_tokens / r.block_size)
            if committed[r.id] + need <= knobs["cap"] * r.num_blocks:
                key = (committed[r.id] / r.num_blocks, r.id)
                if best is None or key < best[0]:
                    best = (key, r.id, need)
        if best is None:
            break
        out.append((req.id, best[1]))
        committed[best[1]] = committed[best[1]] + best[2]
    return out
