# expect: ok
import functools


@functools.total_ordering
class Load:
    def __init__(self, replica):
        self.key = (replica.num_pending + replica.num_active, replica.id)

    def __eq__(self, other):
        return self.key == other.key

    def __lt__(self, other):
        return self.key < other.key


def route(queue, replicas, now, knobs):
    loads = sorted(Load(r) for r in replicas if r.state == "ready")
    best = max(reversed(loads)) >= loads[0] and loads[0]      # __ge__ from total_ordering
    return [(q.id, best.key[1]) for q in queue]
