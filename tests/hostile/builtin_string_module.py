# expect: error: NameError: name 'string' is not defined
def route(queue, replicas, now, knobs):
    # RestrictedPython's utility_builtins hand out `string`; not ours
    return string.Template("$x").substitute({"x": 1})
