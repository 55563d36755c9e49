# expect: error: Using the format*() methods of `str` is not safe
def route(queue, replicas, now, knobs):
    return "{r.__class__.__mro__}".format_map({"r": rng})
