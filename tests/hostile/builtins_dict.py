# expect: error: "__builtins__" is an invalid variable name because it starts with "_"
def route(queue, replicas, now, knobs):
    __builtins__["open"]("@CANARY@", "w").write("pwned")
    return []
