# expect: error: knob 'w' must hold numbers within +-1e+09
KNOBS = {"w": (0.0, -1e308, 1e308)}


def route(queue, replicas, now, knobs):
    return [(q.id, 0) for q in queue]
