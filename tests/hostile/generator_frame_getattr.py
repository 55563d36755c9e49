# expect: error: "gi_frame" is a restricted attribute name
def route(queue, replicas, now, knobs):
    gen = (q for q in queue)
    frame = getattr(gen, "gi" + "_frame")
    return getattr(getattr(frame, "f_back"), "f_globals")
