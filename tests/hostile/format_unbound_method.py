# expect: error: Using the format*() methods of `str` is not safe
def route(queue, replicas, now, knobs):
    fmt = str.format
    return fmt("{0.__globals__[__builtins__]}", route)
