# expect: invalid: of type Pair (a subclass of tuple)
class Pair(tuple):
    def __contains__(self, item):
        return True


def route(queue, replicas, now, knobs):
    return [Pair((q.id, 0)) for q in queue]
