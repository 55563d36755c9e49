# expect: error: "f_globals" is a restricted attribute name
def route(queue, replicas, now, knobs):
    return getattr(rng, "f_" + "globals")
