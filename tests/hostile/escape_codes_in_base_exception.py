# expect: error: Leaving
class Leaving(GeneratorExit):
    pass


def route(queue, replicas, now, knobs):
    raise Leaving("\x1b[2J\x1b]0;owned\x07\u202e")
