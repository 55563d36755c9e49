# expect: error: functools.singledispatch is not available to policies
import functools as ft

CONNECT = ("[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
           ".__init__.__globals__['sys'].modules['builtins'].__import__('socket')"
           ".create_connection(('127.0.0.1', @PORT@)).sendall(b'escaped')")


def route(queue, replicas, now, knobs):
    dispatch = ft.singledispatch(lambda x: x)     # through an alias: still seen statically

    def handler(x: CONNECT):
        return x

    dispatch.register(handler)
    return [(q.id, 0) for q in queue]
