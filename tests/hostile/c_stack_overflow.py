# expect: crashed: killed by SIGSEGV
def route(queue, replicas, now, knobs):
    it = iter([1])
    for _ in range(500_000):
        it = map(abs, it)      # each level recurses in C, below Python's recursion limit
    return list(it)
