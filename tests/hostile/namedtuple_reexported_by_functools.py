# expect: error: functools.namedtuple is not available to policies
import functools

Pair = functools.namedtuple("Pair", "rid rep", module="os")


def route(queue, replicas, now, knobs):
    return [tuple(Pair(q.id, 0)) for q in queue]
