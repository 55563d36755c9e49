# expect: error: forbidden import 'posix'
import posix


def route(queue, replicas, now, knobs):
    posix._exit(0)
