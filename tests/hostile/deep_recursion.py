# expect: error: RecursionError: maximum recursion depth exceeded
def down(n):
    return down(n + 1)


def route(queue, replicas, now, knobs):
    return down(0)
