# expect: timeout: timed out
n = 0
while True:
    n += 1


def route(queue, replicas, now, knobs):
    return []
