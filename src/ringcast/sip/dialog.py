"""RFC 3261 §12 dialogs, from the UAC side: early, confirmed, terminated.

A dialog is identified by Call-ID, local tag and remote tag (§12). It holds
what every in-dialog request needs: the route set (the 2xx's Record-Route,
reversed, §12.1.2), the remote target (the Contact, updated by target-refresh
requests, §12.2), and both CSeq spaces (§12.2.1.1, §12.2.2).
"""

from __future__ import annotations

import enum
import logging
import re

from aiosipua.headers import (
    CaseInsensitiveDict,
    parse_address,
    parse_params,
    parse_uri,
    stringify_address,
)
from aiosipua.message import SipRequest, SipResponse

logger = logging.getLogger(__name__)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


def _strip_brackets(value: str) -> str:
    """``<sip:x;lr>`` -> ``sip:x;lr`` (a Route/Contact value's URI)."""
    value = value.strip()
    lt, gt = value.find("<"), value.find(">")
    if lt != -1 and gt > lt:
        return value[lt + 1 : gt]
    return value


def contact_uri(message: SipRequest | SipResponse) -> str | None:
    """The first Contact's URI, or None."""
    raw = message.headers.get_first("contact")
    if not raw or raw.strip() == "*":
        return None
    return _strip_brackets(raw) if "<" in raw else raw.split(";", 1)[0].strip()


def redirect_targets(response: SipResponse, *, limit: int, skip: str = "") -> list[str]:
    """A 3xx's Contact URIs in the order to try them (§8.1.3.4): highest ``q`` first.

    §20.10: ``q`` (0 to 1, 1 when absent) is a header parameter, after ``>`` or
    after the URI when there are no brackets. Ties keep the order listed (one
    header or several, comma-joined). A ``q`` that is not a number ranks last.
    Only ``sip:`` and ``sips:`` URIs (we cannot call ``tel:``, ``http:``
    is for people); ``skip`` (the URI just tried) and repeats are left out,
    at most ``limit`` returned.
    """
    ranked: list[tuple[float, int, str]] = []
    seen = {skip}
    for index, raw in enumerate(response.headers.get("contact")):
        raw = raw.strip()
        if "<" in raw:
            uri = _strip_brackets(raw)
            params = raw[raw.find(">", raw.find("<")) + 1 :]
        else:
            uri, _, params = raw.partition(";")
        uri = uri.strip()
        if not uri.lower().startswith(("sip:", "sips:")) or uri in seen:
            continue
        seen.add(uri)
        ranked.append((-_q_value(parse_params(params.strip().lstrip(";")).get("q")), index, uri))
    ranked.sort()
    return [uri for _, _, uri in ranked[:limit]]


def _q_value(raw: str | None) -> float:
    if raw is None:
        return 1.0
    try:
        q = float(raw)
    except ValueError:
        return -1.0
    return q if 0.0 <= q <= 1.0 else -1.0


class Dialog:
    """One §12 dialog created by our INVITE (we are the UAC)."""

    __slots__ = (
        "call_id",
        "local_tag",
        "remote_tag",
        "local_uri",
        "remote_uri",
        "remote_target",
        "route_set",
        "local_seq",
        "remote_seq",
        "state",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: str,
        remote_uri: str,
        remote_target: str,
        route_set: list[str],
        local_seq: int,
        state: DialogState,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri  # our From value without tag
        self.remote_uri = remote_uri  # the To value without tag
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq: int | None = None
        self.state = state
        logger.debug("dialog %s created (%s)", call_id, state.value)

    @classmethod
    def from_response(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """Create the dialog a 101-199 (with To tag) or 2xx to our INVITE makes (§12.1.2)."""
        to = response.to_addr
        frm = invite.from_addr
        is_2xx = 200 <= response.status_code < 300
        if to is None or frm is None or not frm.tag or not (to.tag or is_2xx):
            raise ValueError("response does not create a dialog (no To tag)")
        # §12.1.2: a 2xx without To tag (RFC 2543 peer) makes a dialog with a null tag.
        cseq = invite.cseq
        state = DialogState.CONFIRMED if 200 <= response.status_code < 300 else DialogState.EARLY
        dialog = cls(
            call_id=invite.call_id or "",
            local_tag=frm.tag,
            remote_tag=to.tag or "",
            local_uri=_without_tag(invite.headers.get_first("from") or ""),
            remote_uri=_without_tag(invite.headers.get_first("to") or ""),
            remote_target=contact_uri(response) or invite.uri,
            route_set=list(reversed(response.headers.get("record-route"))),
            local_seq=cseq.seq if cseq else 1,
            state=state,
        )
        return dialog

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def _set_state(self, new: DialogState) -> None:
        old = self.state
        if old is new:
            return
        self.state = new
        logger.debug("dialog %s: %s -> %s", self.call_id, old.value, new.value)

    def confirm(self, response: SipResponse) -> None:
        """A 2xx arrived for this (early) dialog: recompute route set and target (§13.2.2.4)."""
        if self.state is DialogState.EARLY:
            self.route_set = list(reversed(response.headers.get("record-route")))
        target = contact_uri(response)
        if target:
            self.remote_target = target
        self._set_state(DialogState.CONFIRMED)

    def update_early(self, response: SipResponse) -> None:
        """A later 1xx in the early dialog refreshes the remote target (§12.1.2)."""
        target = contact_uri(response)
        if target:
            self.remote_target = target

    def terminate(self) -> None:
        self._set_state(DialogState.TERMINATED)

    def next_cseq(self) -> int:
        """The CSeq number of our next in-dialog request (§12.2.1.1)."""
        self.local_seq += 1
        return self.local_seq

    def routing(self) -> tuple[str, list[str]]:
        """(Request-URI, Route values) for an in-dialog request (§12.2.1.1).

        Loose routing when the first route has ``lr``; otherwise the strict
        routing rewrite (the first route becomes the Request-URI, the remote
        target is appended as the last Route).
        """
        if not self.route_set:
            return self.remote_target, []
        first = _strip_brackets(self.route_set[0])
        if "lr" in parse_uri(first).params:
            return self.remote_target, list(self.route_set)
        return first, [*self.route_set[1:], f"<{self.remote_target}>"]

    def next_hop_uri(self) -> str:
        """Where an in-dialog request is sent: the first Route, else the remote target."""
        if self.route_set:
            return _strip_brackets(self.route_set[0])
        return self.remote_target

    def create_request(
        self,
        method: str,
        *,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> SipRequest:
        """An in-dialog request without Via (the owner adds Via with a new branch)."""
        uri, routes = self.routing()
        headers = CaseInsensitiveDict()
        headers.append("Via", "")  # placeholder: the owner stamps it (stays first)
        headers.append("Max-Forwards", "70")
        headers.append("From", f"{self.local_uri};tag={self.local_tag}")
        to_tag = f";tag={self.remote_tag}" if self.remote_tag else ""
        headers.append("To", f"{self.remote_uri}{to_tag}")
        headers.append("Call-ID", self.call_id)
        seq = cseq if cseq is not None else self.next_cseq()
        headers.append("CSeq", f"{seq} {method}")
        for route in routes:
            headers.append("Route", route)
        for name, value in (extra or {}).items():
            headers.append(name, value)
        if content_type and body:
            headers.append("Content-Type", content_type)
        return SipRequest(headers=headers, body=body, method=method, uri=uri)

    def check_remote_cseq(self, request: SipRequest) -> bool:
        """Accept an in-dialog request's CSeq (§12.2.2): lower than the last -> False (500).

        ACK and CANCEL reuse their request's number and are not checked.
        """
        cseq = request.cseq
        if cseq is None:
            return False
        if request.method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and cseq.seq < self.remote_seq:
            return False
        self.remote_seq = cseq.seq
        return True

    def refresh_target(self, request: SipRequest) -> None:
        """Target refresh (re-INVITE, UPDATE) moves the remote target (§12.2.2)."""
        target = contact_uri(request)
        if target:
            self.remote_target = target


_TAG_PARAM = re.compile(r";\s*tag\s*=\s*[^;>\s]*", re.I)


def _without_tag(value: str) -> str:
    """A From/To value without its tag (the tag is a header parameter, after ``>``)."""
    gt = value.rfind(">")
    if gt != -1:
        return value[: gt + 1] + _TAG_PARAM.sub("", value[gt + 1 :])
    addr = parse_address(value)
    addr.params.pop("tag", None)
    return stringify_address(addr)
