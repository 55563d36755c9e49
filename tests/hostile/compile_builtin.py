# expect: error: name 'compile' is not defined
CODE = compile("open('@CANARY@', 'w').write('pwned')", "<x>", "exec")


def route(queue, replicas, now, knobs):
    return []
