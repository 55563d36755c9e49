"""Aging: shortest prompt first, with a waiting-time bonus that prevents starvation.

A request's priority is its prefill size in tokens minus `tokens_per_s` for every second it has
waited since it arrived (lower goes first): a long prompt is eventually admitted ahead of new
short ones, so its wait is bounded by about prompt / tokens_per_s seconds.
"""

KNOBS = {"tokens_per_s": (50.0, 0.0, 1000.0)}


def schedule(pending, active, replica, now, knobs):
    rate = knobs["tokens_per_s"]
    order = sorted(pending, key=lambda q: (q.prompt_tokens + q.generated_tokens
                                            - rate * (now - q.arrival_time), q.arrival_time, q.id))
    return [q.id for q in order]
