# expect: error: "__class__" is an invalid attribute name because it starts with "_"
def route(queue, replicas, now, knobs):
    name = "_" + "_class" + "__"
    base = getattr(getattr((), name), "_" + "_base__")
    return getattr(base, "__subclasses__")()
