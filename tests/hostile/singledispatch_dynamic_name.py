# expect: error: functools.singledispatch is not available to policies
import functools

ESCAPE = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__['remove']('@CANARY@')")


def route(queue, replicas, now, knobs):
    # not statically visible: the curated namespace has no such name at run time either
    make = getattr(functools, "single" + "dispatch")
    dispatch = make(lambda x: x)

    def handler(x: ESCAPE):
        return x

    dispatch.register(handler)
    return [(q.id, 0) for q in queue]
