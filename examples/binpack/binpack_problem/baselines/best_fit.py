"""Best fit: the open bin the item fills most tightly; a new bin when the tightest fit would
still leave more than `slack` free and the item is large."""

KNOBS = {"slack": (1.0, 0.0, 1.0), "large": (0.5, 0.0, 1.0)}


def pack(item, bins, knobs):
    best, room = -1, 2.0
    for i, free in enumerate(bins):
        left = free - item
        if 0 <= left < room:
            best, room = i, left
    if best >= 0 and room > knobs["slack"] and item > knobs["large"]:
        return -1
    return best
