# expect: error: forbidden import 'subprocess'
def route(queue, replicas, now, knobs):
    import subprocess
    subprocess.run(["rm", "-f", "@CANARY@"])
    return []
