# expect: error: TypeError: functools.total_ordering only decorates classes the policy defines
import collections
import functools


def route(queue, replicas, now, knobs):
    functools.total_ordering(collections.Counter)
    return [(q.id, 0) for q in queue]
