# expect: error: "tb_frame" is a restricted name
def route(queue, replicas, now, knobs):
    try:
        1 / 0
    except ZeroDivisionError as exc:
        frame = exc.__traceback__.tb_frame
        return frame.f_back.f_globals
