# expect: error: statistics.random is not available to policies
import statistics


def route(queue, replicas, now, knobs):
    statistics.random.seed(0)
    return [(q.id, 0) for q in queue]
