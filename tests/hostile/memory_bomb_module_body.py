# expect: crashed: exceeded the memory limit of 512 MiB
TABLE = bytearray(8 * 2 ** 30) if False else "x" * (8 * 2 ** 30)


def route(queue, replicas, now, knobs):
    return []
