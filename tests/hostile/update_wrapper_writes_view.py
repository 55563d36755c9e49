# expect: error: functools.update_wrapper is not available to policies
import functools


class Source:
    def __init__(self):
        self.free_blocks = 10 ** 9


def route(queue, replicas, now, knobs):
    # a real setattr on a simulator view, which `replicas[0].free_blocks = ...` may not do
    functools.update_wrapper(replicas[0], Source(), assigned=("free_blocks",), updated=())
    return [(q.id, 0) for q in queue]
