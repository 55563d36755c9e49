# expect: error: statistics.sys is not available to policies
import statistics

EXIT = statistics.sys.exit


def route(queue, replicas, now, knobs):
    EXIT(0)
