# expect: invalid: got Pairs (a subclass of list)
class Pairs(list):
    def __eq__(self, other):
        return True


def route(queue, replicas, now, knobs):
    return Pairs((q.id, 0) for q in queue)
