"""The cluster's pure rules: heartbeat timing, the lease an instance may trust, shares of the
budget and of the tasks. No I/O; watcher/cluster/member.py applies them.

Why an instance stops polling before its lease runs out: another instance may take its tasks
over the moment the lease ends (by the database's clock). Polls stop once FENCE_FRACTION of the
lease has passed since the last renewal was *sent* (the renewal set the lease from a later
moment, so the local deadline is earlier than the real one), leaving the rest of the lease for
the polls in flight to finish. With a heartbeat every third of the lease, that takes two missed
heartbeats in a row.
"""

from __future__ import annotations

import math
from typing import Final

HEARTBEATS_PER_LEASE: Final = 3
FENCE_FRACTION: Final = 2 / 3
# A joining instance waits this long before it polls: the others lower their share at once
# (told by a notice), and a full 1-second window passes before the newcomer adds its own, so
# no window sees the old shares and the new one together.
JOIN_SETTLE_S: Final = 1.1
# An instance whose held tasks exceed its target by more than this lets the excess go.
REBALANCE_SLACK: Final = 0.05
MIN_SLACK: Final = 2
# Claims are made this many rows per transaction.
CLAIM_BATCH: Final = 500
# After a failed heartbeat, the next try comes this soon (not a whole interval later).
RETRY_S: Final = 1.0
# How often an instance compares its local work with what the store says it holds, even when
# nothing suggests a difference (a safety net: work held but not watched would never be polled).
RECONCILE_EVERY_S: Final = 300.0
# A lease seen to end at T (database clock) is looked at again this long after T.
TAKEOVER_MARGIN_S: Final = 0.05


def heartbeat_interval(lease_s: float) -> float:
    return max(0.05, lease_s / HEARTBEATS_PER_LEASE)


def trusted_until(sent_at: float, lease_s: float) -> float:
    """Until when (on the clock `sent_at` was read from) this instance may keep polling after a
    renewal it sent at `sent_at`."""
    return sent_at + lease_s * FENCE_FRACTION


def share(live: int) -> float:
    """This instance's part of the budget when `live` instances share it."""
    return 1.0 / max(1, live)


def task_target(active: int, live: int) -> int:
    """How many of the `active` tasks each of `live` instances should hold."""
    return math.ceil(max(0, active) / max(1, live))


def rebalance(held: int, target: int) -> tuple[int, int]:
    """(tasks to claim, tasks to let go) for an instance holding `held` with `target` due.

    Letting go waits for an excess beyond a slack, so tasks do not move back and forth while
    registrations and finished tasks change the counts a little."""
    slack = max(MIN_SLACK, int(target * REBALANCE_SLACK))
    if held > target + slack:
        return 0, held - target
    if held < target:
        return target - held, 0
    return 0, 0


def takeover_wait(now_db: float, next_expiry: float | None) -> float | None:
    """How long until another instance's lease ends (plus a margin), from a heartbeat's reading
    of the database's clock; None if no other instance is live."""
    if next_expiry is None:
        return None
    return max(0.0, next_expiry - now_db) + TAKEOVER_MARGIN_S
