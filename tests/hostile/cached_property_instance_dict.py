# expect: error: functools.cached_property is not available to policies
from functools import cached_property


def peek_source(self):
    return None


class Box:
    secret = cached_property(peek_source)


def route(queue, replicas, now, knobs):
    return [(q.id, 0) for q in queue]
