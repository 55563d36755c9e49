# expect: error: AttributeError: "__wrapped__" is an invalid attribute name
import functools


def route(queue, replicas, now, knobs):
    cached = functools.lru_cache(maxsize=4)(route)
    return getattr(cached, "__wrapped__")
