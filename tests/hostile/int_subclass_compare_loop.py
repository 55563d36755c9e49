# expect: invalid: of type Sneaky (a subclass of int)
class Sneaky(int):
    def __ge__(self, other):
        while True:
            pass


def route(queue, replicas, now, knobs):
    # the simulator checks `0 <= replica_id`: Python calls the subclass's reflected __ge__
    return [(q.id, Sneaky(0)) for q in queue]
