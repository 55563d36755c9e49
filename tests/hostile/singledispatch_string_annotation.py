# expect: error: functools.singledispatch is not available to policies
import functools

# register() calls typing.get_type_hints(handler): the string annotation is evaluated with plain
# eval, outside RestrictedPython, in the policy's globals
ESCAPE = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__['remove']('@CANARY@')")


def route(queue, replicas, now, knobs):
    dispatch = functools.singledispatch(lambda x: x)

    def handler(x: ESCAPE):
        return x

    dispatch.register(handler)
    return [(q.id, 0) for q in queue]
