# expect: error: statistics.sys is not available to policies
from statistics import sys


def route(queue, replicas, now, knobs):
    sys.modules["os"].remove("@CANARY@")
    return []
