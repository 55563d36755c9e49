# expect: error: name 'type' is not defined
Evil = type("Evil", (), {"__getattribute__": lambda self, name: name})


def route(queue, replicas, now, knobs):
    return []
