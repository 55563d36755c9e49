# expect: invalid: of type Same (a subclass of int)
# problem: scheduling
class Same(int):
    def __eq__(self, other):
        return True


def schedule(pending, active, replica, now, knobs):
    return [Same(p.id) for p in pending]
