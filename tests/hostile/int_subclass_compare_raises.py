# expect: invalid: of type Liar (a subclass of int)
class Liar(int):
    def __ge__(self, other):
        raise KeyError("stolen")


def route(queue, replicas, now, knobs):
    # raised inside the simulator's own code, outside the policy call it guards
    return [(q.id, Liar(0)) for q in queue]
