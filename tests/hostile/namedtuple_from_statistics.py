# expect: error: statistics.namedtuple is not available to policies
from statistics import namedtuple


def route(queue, replicas, now, knobs):
    return [tuple(namedtuple("P", "a b")(q.id, 0)) for q in queue]
