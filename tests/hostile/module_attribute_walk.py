# expect: error: module 'statistics' attribute 'random' is a forbidden module
import statistics


def route(queue, replicas, now, knobs):
    statistics.random.seed(0)
    return [(q.id, 0) for q in queue]
