# expect: error: "__class__" is an invalid attribute name because it starts with "_"
def route(queue, replicas, now, knobs):
    cls = getattr(replicas[0], "__class__")
    return cls
