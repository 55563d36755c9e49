# expect: crashed: exceeded the memory limit of 512 MiB
def route(queue, replicas, now, knobs):
    while True:
        print("flood " * 200_000)
