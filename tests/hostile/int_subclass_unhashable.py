# expect: invalid: of type Liar (a subclass of int)
class Liar(int):
    def __eq__(self, other):      # defining __eq__ drops __hash__: the id cannot be looked up
        return False


def route(queue, replicas, now, knobs):
    # the simulator hashes the returned ids in its own code, outside the policy call it guards
    return [(Liar(q.id), 0) for q in queue]
