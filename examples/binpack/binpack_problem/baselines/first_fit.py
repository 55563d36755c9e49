"""First fit: the first open bin with room, else a new bin. The reference (fitness 1.0)."""


def pack(item, bins, knobs):
    for i, free in enumerate(bins):
        if free >= item:
            return i
    return -1
