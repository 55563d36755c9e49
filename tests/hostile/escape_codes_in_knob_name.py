# expect: error: knob '\x1b[2Jwiped\x07' value 5 is outside [0, 1]
KNOBS = {"\x1b[2Jwiped\x07": (5, 0, 1)}


def route(queue, replicas, now, knobs):
    return []
