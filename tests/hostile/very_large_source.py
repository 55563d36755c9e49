# expect: error: bytes, over the limit of 100000
# pad-to-bytes: 250000
def route(queue, replicas, now, knobs):
    return []
