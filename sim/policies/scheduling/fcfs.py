"""First come, first served: admit in the order requests reached this replica.

The reference baseline of the scheduling problem (fitness 1.0), and exactly the simulator's
built-in order: `pending` arrives in dispatch order, with evicted requests (which restart) put
back at the front. Never starves anyone, but a long prompt at the head makes everyone behind it
wait (head-of-line blocking).
"""


def schedule(pending, active, replica, now, knobs):
    return [req.id for req in pending]
