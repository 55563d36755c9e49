# expect: error: TypeError: functools.total_ordering only decorates classes the policy defines
import functools


def route(queue, replicas, now, knobs):
    # total_ordering setattr()s comparison methods on what it is given: not on our objects
    functools.total_ordering(replicas[0])
    return [(q.id, 0) for q in queue]
