# expect: error: Leaving: leaving
class Leaving(GeneratorExit):
    pass


def route(queue, replicas, now, knobs):
    # not an Exception: it passes the simulator's `except Exception` and ends the job
    raise Leaving("leaving")
