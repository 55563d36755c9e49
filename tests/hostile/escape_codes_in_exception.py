# expect: error: ValueError: \x1b[2J\x1b]0;owned\x07 \u202eevil\x9b
def route(queue, replicas, now, knobs):
    # clear the screen, set the terminal title, ring the bell, reverse the text direction
    raise ValueError("\x1b[2J\x1b]0;owned\x07\r\u202eevil\x9b")
