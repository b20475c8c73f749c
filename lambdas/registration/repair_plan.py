"""What an event's items say is wrong, and the repairs that would fix it: a survey of
the event's seats, waitlist slots and memberships, and the plan of repair actions,
grouped so that one user's items are repaired together."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from registration import keys
from registration.data import RegistrationStore
from registration.data.repairs import MAX_REPAIR_ACTIONS
from registration.models import EventState
from registration.reconciliation_models import Counters, RepairAction


@dataclass(frozen=True)
class Slot:
    seq: int
    userId: str
    joinedAt: str | None


@dataclass(frozen=True)
class Place:
    """A membership: the user says they wait at `seq`."""

    userId: str
    seq: int
    joinedAt: str | None


@dataclass(frozen=True)
class Survey:
    """One recount of an event from the base table."""

    seats: int
    seat_digest: str
    slots: dict[int, Slot]
    places: dict[str, Place]
    seat_holders: frozenset[str]  # waitlisted users (either half) who also hold a seat

    def same_items(self, other: Survey) -> bool:
        return (
            self.seats == other.seats
            and self.seat_digest == other.seat_digest
            and self.slots == other.slots
            and self.places == other.places
            and self.seat_holders == other.seat_holders
        )


@dataclass(frozen=True)
class Group:
    """Repair actions that must commit together, and what they do to the entry count."""

    actions: tuple[RepairAction, ...]
    entries_delta: int


@dataclass(frozen=True)
class Plan:
    seen: Counters
    after: Counters
    groups: tuple[Group, ...]
    entries: int  # complete waitlist entries before the repair
    overbooked: bool

    @property
    def actions(self) -> list[RepairAction]:
        return [a for g in self.groups for a in g.actions]

    @property
    def empty(self) -> bool:
        return not self.groups and self.seen == self.after

    @property
    def count_repairs(self) -> int:
        return sum(
            getattr(self.seen, name) != getattr(self.after, name)
            for name in ("registeredCount", "waitlistCount", "waitlistSeq")
        )


# --- reading -------------------------------------------------------------------------


def survey(store: RegistrationStore, event_id: str) -> Survey:
    """Recount the event's seats and waitlist items (strongly consistent queries)."""
    places: dict[str, Place] = {}
    for item in store.iter_partition(event_id, keys.WAITLISTED_PREFIX):
        user = item.get("userId") or item["SK"][len(keys.WAITLISTED_PREFIX) :]
        places[user] = Place(userId=user, seq=int(item["seq"]), joinedAt=item.get("joinedAt"))
    slots: dict[int, Slot] = {}
    for item in store.iter_partition(event_id, keys.QUEUE_PREFIX):
        seq = int(item.get("seq", item["SK"][len(keys.QUEUE_PREFIX) :]))
        slots[seq] = Slot(seq=seq, userId=str(item["userId"]), joinedAt=item.get("joinedAt"))
    waiting = set(places) | {s.userId for s in slots.values()}

    digest = hashlib.sha256()
    seats = 0
    holders: set[str] = set()
    for sort_key in store.iter_sort_keys(event_id, keys.REG_PREFIX):
        seats += 1
        digest.update(sort_key.encode())
        digest.update(b"\n")
        user = sort_key[len(keys.REG_PREFIX) :]
        if user in waiting:
            holders.add(user)
    return Survey(
        seats=seats,
        seat_digest=digest.hexdigest(),
        slots=slots,
        places=places,
        seat_holders=frozenset(holders),
    )


# --- deciding ------------------------------------------------------------------------


def plan_repair(event: EventState, found: Survey) -> Plan:
    """What to change so that the counters and the waitlist agree with the items."""
    seen = Counters.of(event)
    by_user: dict[str, list[Slot]] = {}
    for slot in sorted(found.slots.values(), key=lambda s: s.seq):
        by_user.setdefault(slot.userId, []).append(slot)

    groups: list[Group] = []
    entries = 0
    claimed: set[int] = set()  # free places a membership has been given back (first claim wins)
    for user in sorted(set(by_user) | set(found.places)):
        user_slots = by_user.get(user, [])
        place = found.places.get(user)
        paired = place is not None and any(s.seq == place.seq for s in user_slots)
        entries += paired
        groups.extend(_user_repairs(user, user_slots, place, paired, found, claimed))

    highest = max([*found.slots, *(p.seq for p in found.places.values()), event.waitlistSeq])
    delta = sum(g.entries_delta for g in groups)
    after = Counters(registeredCount=found.seats, waitlistCount=entries + delta, waitlistSeq=highest)
    return Plan(
        seen=seen,
        after=after,
        groups=tuple(groups),
        entries=entries,
        # Lowering capacity keeps the seats above it: only more than those is overbooking.
        overbooked=found.seats > event.capacity + event.keptOverCapacity,
    )


def _user_repairs(
    user: str, user_slots: list[Slot], place: Place | None, paired: bool, found: Survey, claimed: set[int]
) -> Iterator[Group]:
    def remove_slot(slot: Slot, reason: str) -> RepairAction:
        return RepairAction(kind="remove_slot", userId=user, seq=slot.seq, reason=reason)

    if user in found.seat_holders:
        reason = "the user holds a seat"
        if place is not None and paired:
            pair_slot = next(s for s in user_slots if s.seq == place.seq)
            yield Group(
                (
                    RepairAction(kind="remove_membership", userId=user, seq=place.seq, reason=reason),
                    remove_slot(pair_slot, reason),
                ),
                entries_delta=-1,
            )
            user_slots = [s for s in user_slots if s is not pair_slot]
        elif place is not None:
            yield Group(
                (RepairAction(kind="remove_membership", userId=user, seq=place.seq, reason=reason),), 0
            )
        for slot in user_slots:
            yield Group((remove_slot(slot, reason),), 0)
        return

    if place is not None and paired:
        for slot in user_slots:
            if slot.seq != place.seq:
                yield Group((remove_slot(slot, "a duplicate place of a waitlisted user"),), 0)
        return

    if user_slots:
        kept, *extra = user_slots
        for slot in extra:
            yield Group((remove_slot(slot, "a later duplicate place of the same user"),), 0)
        if place is None:
            action = RepairAction(
                kind="restore_membership",
                userId=user,
                seq=kept.seq,
                joinedAt=kept.joinedAt,
                reason="the slot had no membership",
            )
        else:
            action = RepairAction(
                kind="repoint_membership",
                userId=user,
                seq=kept.seq,
                fromSeq=place.seq,
                reason="the membership pointed at another place",
            )
        yield Group((action,), entries_delta=1)
        return

    if place is None:  # pragma: no cover - every user comes from a slot or a membership
        return
    if place.seq in found.slots or place.seq in claimed:
        yield Group(
            (
                RepairAction(
                    kind="remove_membership",
                    userId=user,
                    seq=place.seq,
                    reason="its place belongs to another user",
                ),
            ),
            0,
        )
    else:
        claimed.add(place.seq)
        yield Group(
            (
                RepairAction(
                    kind="restore_slot",
                    userId=user,
                    seq=place.seq,
                    joinedAt=place.joinedAt,
                    reason="the membership had no slot",
                ),
            ),
            entries_delta=1,
        )


def chunks(groups: Iterable[Group], limit: int = MAX_REPAIR_ACTIONS) -> list[list[Group]]:
    """Groups packed into transactions of at most `limit` actions (items of one user stay
    together)."""
    out: list[list[Group]] = []
    size = 0
    for group in groups:
        if not out or size + len(group.actions) > limit:
            out.append([])
            size = 0
        out[-1].append(group)
        size += len(group.actions)
    return out
