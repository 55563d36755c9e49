# expect: error: functools.partialmethod is not available to policies
import functools


class Box:
    grab = functools.partialmethod(getattr, "attrname")


def route(queue, replicas, now, knobs):
    Box().grab()
    return [(q.id, 0) for q in queue]
