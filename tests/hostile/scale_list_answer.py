# expect: invalid: scale must return an int number of replicas
# problem: autoscaling
def scale(cluster, now, knobs):
    return [2]
