# expect: invalid: of type Anywhere (a subclass of int)
class Anywhere(int):
    def __ge__(self, other):
        return True

    def __lt__(self, other):
        return True

    def __le__(self, other):
        return True


def route(queue, replicas, now, knobs):
    # 99 is no replica, but `0 <= rep < n` would believe it
    return [(q.id, Anywhere(99)) for q in queue]
