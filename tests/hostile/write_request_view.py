# expect: error: TypeError: attribute-less object (assign or del)
def route(queue, replicas, now, knobs):
    for q in queue:
        q.prompt_tokens = 1
    return [(q.id, replicas[0].id) for q in queue]
