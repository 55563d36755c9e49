# expect: error: functools.cached_property is not available to policies
import functools

# a caught exception's __traceback__ -> tb_frame -> f_back ... into the engine's frames, whose
# globals hold os / sys


class Holder:
    def __init__(self, name):
        self.attrname = name


def peek_source(self):
    return None


PEEK = functools.cached_property(peek_source)


class Box:
    peek = PEEK


def read(obj, name):
    functools.wraps(Holder(name), assigned=("attrname",), updated=())(PEEK)
    box = Box()
    functools.wraps(obj, assigned=(name,), updated=())(box)
    return box.peek


def route(queue, replicas, now, knobs):
    try:
        1 / 0
    except ZeroDivisionError as exc:
        err = exc
    frame = read(read(err, "__traceback__"), "tb_frame")
    while frame is not None:
        found = read(frame, "f_globals")
        if "sys" in found:
            found["sys"].modules["os"].remove("@CANARY@")
            break
        frame = read(frame, "f_back")
    return [(q.id, 0) for q in queue]
