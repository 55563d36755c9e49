# expect: timeout: timed out
import collections
import itertools


def route(queue, replicas, now, knobs):
    collections.deque(itertools.count(), maxlen=0)   # loops in C, never returns to Python
    return []
