"""A REGISTER binding with a registrar (RFC 3261 §10.2), as a pure state machine.

The machine decides; its owner (:mod:`ringcast.sip.registration`) sends the
REGISTER requests and runs the one timer. Each input returns the actions to
apply: :class:`Send` (a REGISTER asking for `expires` seconds; 0 removes the
binding, §10.2.2) and :class:`Arm` (the timer, seconds from now). The owner
answers digest challenges itself (§22.2) and feeds the final result of each
REGISTER: :meth:`Registration.on_success` with the expiry the registrar
granted (§10.2.4: the Contact's ``expires``, else the Expires header), or
:meth:`Registration.on_failure` (a final error, or Timer F as 408).

- A binding is refreshed before it runs out (:func:`refresh_after`).
- 423 Interval Too Brief with Min-Expires asks again with that interval (§10.3 step 7).
- Other failures wait and try again, doubling from `retry` up to `retry_max`
  (RFC 5626 §4.5's back-off), or the Retry-After when it is longer.
- :meth:`Registration.stop` removes a live binding (expires 0) before it ends.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

REFRESH_MARGIN = 10.0  # seconds before expiry a refresh goes out at the latest
REFRESH_LEAD = 1.5  # seconds before expiry a refresh goes out, even for short grants


class RegState(enum.Enum):
    IDLE = "idle"  # not started
    REGISTERING = "registering"  # a REGISTER is out; no binding yet
    REGISTERED = "registered"  # bound until the refresh
    REFRESHING = "refreshing"  # bound; the refresh is out
    BACKOFF = "backoff"  # no binding; waiting to try again
    UNREGISTERING = "unregistering"  # the REGISTER with expires 0 is out
    STOPPED = "stopped"  # done; nothing more to send

    @property
    def bound(self) -> bool:
        return self in (RegState.REGISTERED, RegState.REFRESHING)


@dataclass(frozen=True)
class Send:
    """Send a REGISTER asking for `expires` seconds (0: remove the binding)."""

    expires: int


@dataclass(frozen=True)
class Arm:
    """(Re)arm the one timer: :meth:`Registration.on_timer` in `seconds`."""

    seconds: float


Action = Send | Arm


def refresh_after(granted: int) -> float:
    """Seconds after a grant of `granted` seconds to send the refresh: at 80 % of
    the interval, or `REFRESH_MARGIN` before it ends when that is earlier and
    still past half of it; in any case `REFRESH_LEAD` before it ends (registrars
    that count whole seconds may end a binding up to a second early, and a
    challenged refresh takes two round trips), but not before half of it, nor
    under half a second."""
    at = granted * 0.8
    if granted - REFRESH_MARGIN >= granted / 2:
        at = min(at, granted - REFRESH_MARGIN)
    at = max(granted / 2, min(at, granted - REFRESH_LEAD))
    return max(0.5, at)


def backoff(failures: int, retry: float, retry_max: float, jitter: float = 1.0) -> float:
    """Seconds to wait after the `failures`-th failure in a row: `retry` doubled
    for each earlier one, capped at `retry_max`, times `jitter` (0.5..1, chosen
    by the owner so that many dialers do not retry together)."""
    return float(min(retry_max, retry * 2.0 ** max(0, failures - 1)) * jitter)


class Registration:
    """One binding's life. `name` labels the log lines (the trunk)."""

    def __init__(
        self, name: str, *, expires: int, retry: float = 30.0, retry_max: float = 1800.0
    ) -> None:
        self.name = name
        self.expires = expires  # what we ask for (raised by a 423)
        self.retry = retry
        self.retry_max = retry_max
        self.state = RegState.IDLE
        self.granted: int | None = None  # seconds the registrar granted last
        self.failures = 0  # in a row
        self.last_error: str | None = None

    def _set_state(self, new: RegState) -> None:
        if new is not self.state:
            log.info("registration %s: %s -> %s", self.name, self.state.value, new.value)
            self.state = new

    # --- inputs ---------------------------------------------------------------

    def start(self) -> list[Action]:
        if self.state is not RegState.IDLE:
            return []
        self._set_state(RegState.REGISTERING)
        return [Send(self.expires)]

    def on_success(self, granted: int | None) -> list[Action]:
        """A 2xx to our REGISTER; `granted` is the expiry of our Contact in it."""
        if self.state is RegState.UNREGISTERING:
            self.granted = None
            self._set_state(RegState.STOPPED)
            return []
        if self.state not in (RegState.REGISTERING, RegState.REFRESHING):
            return []
        if granted is None:
            granted = self.expires  # §10.2.4: none given, ours stands
        if granted <= 0:  # the registrar did not keep our binding
            return self._fail("the registrar kept no binding (expires 0)", None)
        self.granted = granted
        self.failures = 0
        self.last_error = None
        self._set_state(RegState.REGISTERED)
        return [Arm(refresh_after(granted))]

    def on_failure(
        self,
        status: int,
        reason: str,
        *,
        min_expires: int | None = None,
        retry_after: int | None = None,
        jitter: float = 1.0,
    ) -> list[Action]:
        """A final non-2xx to our REGISTER (or 408 for no answer, Timer F)."""
        if self.state is RegState.UNREGISTERING:
            self.granted = None
            self._set_state(RegState.STOPPED)  # we tried; the binding runs out on its own
            return []
        if self.state not in (RegState.REGISTERING, RegState.REFRESHING):
            return []
        if status == 423 and min_expires is not None and min_expires > self.expires:
            self.expires = min_expires  # §10.2.8: ask again with the registrar's minimum
            return [Send(self.expires)]
        return self._fail(f"{status} {reason}".strip(), retry_after, jitter)

    def _fail(self, error: str, retry_after: int | None, jitter: float = 1.0) -> list[Action]:
        self.failures += 1
        self.granted = None
        self.last_error = error
        self._set_state(RegState.BACKOFF)
        wait = backoff(self.failures, self.retry, self.retry_max, jitter)
        if retry_after is not None and retry_after > wait:
            wait = float(min(retry_after, self.retry_max))
        return [Arm(wait)]

    def on_timer(self) -> list[Action]:
        """The timer fired: refresh a binding, or try again after a failure."""
        if self.state is RegState.REGISTERED:
            self._set_state(RegState.REFRESHING)
            return [Send(self.expires)]
        if self.state is RegState.BACKOFF:
            self._set_state(RegState.REGISTERING)
            return [Send(self.expires)]
        return []

    def stop(self) -> list[Action]:
        """Clean shutdown: remove a binding we may hold (§10.2.2), else just end.

        A REGISTER still out may yet create a binding, so it is removed too."""
        if self.state in (RegState.REGISTERED, RegState.REFRESHING, RegState.REGISTERING):
            self._set_state(RegState.UNREGISTERING)
            return [Send(0)]
        if self.state is not RegState.UNREGISTERING:
            self._set_state(RegState.STOPPED)
        return []
