# expect: error: Eval calls are not allowed
def route(queue, replicas, now, knobs):
    eval("__import__('os').remove('@CANARY@')")
    return []
