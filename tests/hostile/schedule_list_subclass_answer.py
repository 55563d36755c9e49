# expect: invalid: got Ids (a subclass of list)
# problem: scheduling
class Ids(list):
    pass


def schedule(pending, active, replica, now, knobs):
    return Ids(p.id for p in pending)
