"""A playlist with `gather.actions` (issue 17) as steps, and the choice after a gather.

Pure: no I/O. A playlist becomes a list of steps: `Media` (items streamed as
one prepared prompt; a gather with actions is the last item of its chunk),
`Choose` (the actions of that gather), `Transfer` and `Hangup` (only inside
actions). After a `Choose`, the chosen items' steps run, then the rest of the
playlist, unless an item ended the call (`{"hangup": true}`, a transfer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

DEFAULT_KEY = "default"  # the actions when no key matches the digits (or none came)
MAX_STEPS = 1000  # steps one call may run: a bound, whatever the nesting


@dataclass(frozen=True)
class Media:
    """Items played as one prompt (play, say, pause, dtmf, gather)."""

    items: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Choose:
    """The actions of the gather that ends the `Media` step before this one."""

    digits: int  # how many digits that gather collects
    actions: Mapping[str, Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class Transfer:
    """Connect the callee to `to`: "bridge" (dial and relay) or "refer" (RFC 3515)."""

    to: str
    timeout: float = 20.0
    mode: str = "bridge"
    from_: str | None = None
    hold: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    record: bool = False  # a bridged call recorded, both legs mixed (media.recorder)


@dataclass(frozen=True)
class Hangup:
    pass


Step: TypeAlias = Media | Choose | Transfer | Hangup


def has_actions(playlist: Sequence[Mapping[str, Any]]) -> bool:
    """True when a gather of the playlist has actions (the call then runs as steps)."""
    return any(_actions_of(item) is not None for item in playlist)


def _actions_of(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    gather = item.get("gather")
    if not isinstance(gather, Mapping):
        return None
    actions = gather.get("actions")
    return actions if isinstance(actions, Mapping) and actions else None


def media_item(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """The item as the prompt builder takes it: a gather without its actions."""
    if _actions_of(item) is None:
        return item
    gather = {k: v for k, v in item["gather"].items() if k != "actions"}
    return {**item, "gather": gather}


def steps(items: Sequence[Mapping[str, Any]]) -> list[Step]:
    """The steps of a playlist (or of one action list)."""
    out: list[Step] = []
    chunk: list[Mapping[str, Any]] = []

    def flush() -> None:
        if chunk:
            out.append(Media(tuple(chunk)))
            chunk.clear()

    for item in items:
        if "transfer" in item:
            flush()
            out.append(transfer_step(item))
        elif "hangup" in item:
            flush()
            out.append(Hangup())
        else:
            chunk.append(media_item(item))
            actions = _actions_of(item)
            if actions is not None:
                flush()
                digits = int(item["gather"].get("digits", 1))
                out.append(Choose(digits, actions))
    flush()
    return out


def transfer_step(item: Mapping[str, Any]) -> Transfer:
    frm = item.get("from") or item.get("from_")
    return Transfer(
        to=str(item["transfer"]),
        timeout=float(item.get("timeout") or 20.0),
        mode=str(item.get("mode") or "bridge"),
        from_=str(frm) if frm else None,
        hold=tuple(media_item(i) for i in item.get("hold") or ()),
        record=bool(item.get("record")),
    )


def gathered(before: str, after: str, step: Choose) -> str:
    """The digits the gather of `step` collected: what the media session received
    while its chunk played (`after` minus the `before` prefix), its last
    `step.digits` (earlier gathers of the chunk had theirs first); "" when fewer came."""
    new = after[len(before) :] if after.startswith(before) else after
    return new[-step.digits :] if len(new) >= step.digits else ""


def choose(step: Choose, digits: str) -> tuple[str, list[Step]]:
    """The key chosen for `digits` (a key, "default", or "" when nothing matches)
    and the steps of its actions."""
    if digits and digits in step.actions:
        return digits, steps(step.actions[digits])
    if DEFAULT_KEY in step.actions:
        return DEFAULT_KEY, steps(step.actions[DEFAULT_KEY])
    return "", []


def fallback(step: Choose | None) -> list[Step]:
    """What a failed REFER falls back to: the `default` actions of the gather that
    chose the transfer (issue 17), without another transfer in them."""
    if step is None or DEFAULT_KEY not in step.actions:
        return []
    return [s for s in steps(step.actions[DEFAULT_KEY]) if not isinstance(s, Transfer)]
