# expect: error: module 'statistics' attribute 'sys' is a forbidden module
import statistics

EXIT = statistics.sys.exit


def route(queue, replicas, now, knobs):
    EXIT(0)
