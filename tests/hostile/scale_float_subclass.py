# expect: invalid: got Whole (a subclass of float)
# problem: autoscaling
class Whole(float):
    def is_integer(self):
        return False


def scale(cluster, now, knobs):
    return Whole(3.0)
