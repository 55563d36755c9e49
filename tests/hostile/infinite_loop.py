# expect: timeout: timed out
def route(queue, replicas, now, knobs):
    while True:
        pass
