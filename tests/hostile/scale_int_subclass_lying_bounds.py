# expect: invalid: got Liar (a subclass of int)
# problem: autoscaling
class Liar(int):
    def __le__(self, other):
        return True

    def __ge__(self, other):
        return True


def scale(cluster, now, knobs):
    return Liar(40)          # max_replicas is 4: `min <= answer <= max` would believe it
