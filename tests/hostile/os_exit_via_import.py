# expect: error: forbidden import 'os'
from os import _exit


def route(queue, replicas, now, knobs):
    _exit(0)
