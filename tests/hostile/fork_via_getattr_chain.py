# expect: error: module 'statistics' attribute 'sys' is a forbidden module
import statistics


def route(queue, replicas, now, knobs):
    getattr(statistics, "sy" + "s").modules["os"].fork()
    return []
