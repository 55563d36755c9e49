# expect: error: forbidden import 'ctypes'
import ctypes

ctypes.string_at(0)


def route(queue, replicas, now, knobs):
    return []
