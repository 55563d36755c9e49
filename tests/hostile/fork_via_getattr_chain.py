# expect: error: statistics.sys is not available to policies
import statistics


def route(queue, replicas, now, knobs):
    getattr(statistics, "sy" + "s").modules["os"].fork()
    return []
