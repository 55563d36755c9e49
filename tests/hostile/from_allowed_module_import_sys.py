# expect: error: forbidden import 'sys'
from statistics import sys


def route(queue, replicas, now, knobs):
    sys.modules["os"].remove("@CANARY@")
    return []
