# expect: crashed: exceeded the memory limit of 512 MiB
HOARD = []


def route(queue, replicas, now, knobs):
    while True:
        HOARD.append("x" * 10 ** 7)
