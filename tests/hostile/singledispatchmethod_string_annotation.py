# expect: error: functools.singledispatchmethod is not available to policies
import functools

ESCAPE = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__['remove']('@CANARY@')")


def handler(self, x: ESCAPE):
    return x


def route(queue, replicas, now, knobs):
    method = functools.singledispatchmethod(lambda self, x: x)
    method.register(handler)         # -> singledispatch.register -> get_type_hints -> eval
    return [(q.id, 0) for q in queue]
