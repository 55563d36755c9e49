# expect: error: Exec calls are not allowed
exec("import os; os.remove('@CANARY@')")


def route(queue, replicas, now, knobs):
    return []
