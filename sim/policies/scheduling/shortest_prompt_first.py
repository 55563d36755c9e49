"""Shortest prompt first: admit the requests with the least to prefill first.

A restarted request must prefill its prompt plus what it had generated before eviction. Cuts
mean latency under load (short requests no longer queue behind long prompts), but a long prompt
can wait for as long as shorter ones keep arriving: it starves.
"""


def schedule(pending, active, replica, now, knobs):
    order = sorted(pending, key=lambda q: (q.prompt_tokens + q.generated_tokens,
                                            q.arrival_time, q.id))
    return [q.id for q in order]
