# expect: error: name 'exit' is not defined
def route(queue, replicas, now, knobs):
    exit(0)
