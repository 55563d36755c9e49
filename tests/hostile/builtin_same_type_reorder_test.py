# expect: error: NameError: name 'same_type' is not defined
def route(queue, replicas, now, knobs):
    return [(q.id, 0) for q in queue] if same_type(1, 2) else []
