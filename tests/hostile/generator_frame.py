# expect: error: "gi_frame" is a restricted name
def route(queue, replicas, now, knobs):
    gen = (q for q in queue)
    frame = gen.gi_frame
    return frame.f_back.f_globals["os"]
