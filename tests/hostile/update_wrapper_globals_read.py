# expect: error: functools.cached_property is not available to policies
import functools
import statistics

# update_wrapper does a real getattr/setattr of caller-chosen names; cached_property hands back
# instance.__dict__[attrname]. Together: read any attribute, e.g. statistics.mean.__globals__.


class Holder:
    def __init__(self, name):
        self.attrname = name


def peek_source(self):
    return None


PEEK = functools.cached_property(peek_source)


class Box:
    peek = PEEK


def read(obj, name):
    functools.update_wrapper(PEEK, Holder(name), assigned=("attrname",), updated=())
    box = Box()
    functools.update_wrapper(box, obj, assigned=(name,), updated=())
    return box.peek


def route(queue, replicas, now, knobs):
    globals_ = read(statistics.mean, "__globals__")
    globals_["sys"].modules["os"].remove("@CANARY@")
    return [(q.id, 0) for q in queue]
