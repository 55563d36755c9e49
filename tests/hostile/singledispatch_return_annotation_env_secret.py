# expect: error: functools.singledispatch is not available to policies
from functools import singledispatch

# the evaluated annotation must be a type: get_type_hints' TypeError would carry the secret
SECRET = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__['environ']['GLIA_HOSTILE_CANARY']")


def route(queue, replicas, now, knobs):
    dispatch = singledispatch(lambda x: x)

    def handler(x: SECRET) -> SECRET:
        return x

    dispatch.register(handler)
    return []
