# expect: crashed: exceeded the memory limit of 512 MiB
def route(queue, replicas, now, knobs):
    ballast = [0] * (10 ** 10)
    return [(q.id, 0) for q in queue] + ballast[:0]
