# expect: error: functools.singledispatch is not available to policies
import functools

MODULES = [functools]


def route(queue, replicas, now, knobs):
    dispatch = MODULES[0].singledispatch(lambda x: x)     # a plain read on a namespace
    return [(q.id, 0) for q in queue]
