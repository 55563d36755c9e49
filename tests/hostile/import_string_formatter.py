# expect: error: forbidden import 'string'
import string


def route(queue, replicas, now, knobs):
    return string.Formatter().format("{0.__class__}", rng)
