"""RFC 3261 §12 dialog state from captured responses."""

from __future__ import annotations

from pathlib import Path

from aiosipua.message import SipMessage, SipRequest, SipResponse

from ringcast.sip.dialog import Dialog, DialogState, redirect_targets

DATA = Path(__file__).resolve().parents[2] / "data" / "sip"


def load(name: str) -> SipRequest | SipResponse:
    return SipMessage.parse((DATA / name).read_bytes())


def pair() -> tuple[SipRequest, SipResponse, SipResponse]:
    invite, ringing, ok = (
        load("ringcast_invite.sip"),
        load("sipp_180_ringing.sip"),
        load("sipp_200_ok_sdp.sip"),
    )
    assert isinstance(invite, SipRequest)
    assert isinstance(ringing, SipResponse) and isinstance(ok, SipResponse)
    return invite, ringing, ok


def test_early_then_confirmed() -> None:
    invite, ringing, ok = pair()
    dialog = Dialog.from_response(invite, ringing)
    assert dialog.state is DialogState.EARLY
    assert dialog.call_id == invite.call_id
    assert dialog.remote_tag == "18478SIPpTag011"
    assert dialog.remote_target.startswith("sip:127.0.0.1:")
    dialog.confirm(ok)
    assert dialog.state.value == "confirmed"
    dialog.terminate()
    assert dialog.state.value == "terminated"


def test_in_dialog_request_matches_captured_bye() -> None:
    invite, _, ok = pair()
    dialog = Dialog.from_response(invite, ok)
    bye = dialog.create_request("BYE")
    captured = load("ringcast_bye.sip")
    assert isinstance(captured, SipRequest)
    assert bye.uri == captured.uri
    for name in ("from", "to", "call-id", "cseq"):
        assert bye.headers.get_first(name) == captured.headers.get_first(name), name


def test_route_set_is_reversed_record_route_loose() -> None:
    invite, _, ok = pair()
    ok.headers.append("Record-Route", "<sip:p2.example;lr>")
    ok.headers.append("Record-Route", "<sip:p1.example;lr>")
    dialog = Dialog.from_response(invite, ok)
    assert dialog.route_set == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    request = dialog.create_request("BYE")
    assert request.uri == dialog.remote_target
    assert request.headers.get("route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert dialog.next_hop_uri() == "sip:p1.example;lr"


def test_strict_route_rewrites_request_uri() -> None:
    invite, _, ok = pair()
    ok.headers.append("Record-Route", "<sip:strict.example>")
    dialog = Dialog.from_response(invite, ok)
    request = dialog.create_request("BYE")
    assert request.uri == "sip:strict.example"
    assert request.headers.get("route") == [f"<{dialog.remote_target}>"]


def test_cseq_spaces() -> None:
    invite, _, ok = pair()
    dialog = Dialog.from_response(invite, ok)
    assert dialog.next_cseq() == 2
    reinvite = load("sipp_reinvite.sip")
    assert isinstance(reinvite, SipRequest)
    assert dialog.check_remote_cseq(reinvite) is True
    assert dialog.remote_seq == 1
    reinvite.headers.set_single("CSeq", "0 INVITE")
    assert dialog.check_remote_cseq(reinvite) is False  # lower than the last: 500


def test_target_refresh() -> None:
    invite, _, ok = pair()
    dialog = Dialog.from_response(invite, ok)
    reinvite = load("sipp_reinvite.sip")
    assert isinstance(reinvite, SipRequest)
    reinvite.headers.set_single("Contact", "<sip:moved@127.0.0.1:5999>")
    dialog.refresh_target(reinvite)
    assert dialog.remote_target == "sip:moved@127.0.0.1:5999"


def test_tagless_2xx_makes_a_null_tag_dialog() -> None:
    invite, ringing, ok = pair()
    to = ok.headers.get_first("to") or ""
    ok.headers.set_single("To", to.split(";tag=", 1)[0])
    dialog = Dialog.from_response(invite, ok)
    assert dialog.remote_tag == ""
    bye = dialog.create_request("BYE")
    assert ";tag=" not in (bye.headers.get_first("to") or "")
    ringing.headers.set_single("To", to.split(";tag=", 1)[0])
    try:
        Dialog.from_response(invite, ringing)
    except ValueError as exc:
        assert str(exc) == "response does not create a dialog (no To tag)"
    else:
        raise AssertionError("a tagless 1xx must not create a dialog")


def _redirect(*contacts: str) -> SipResponse:
    lines = "".join(f"Contact: {value}\r\n" for value in contacts)
    raw = (
        "SIP/2.0 300 Multiple Choices\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKr\r\n"
        "From: <sip:me@127.0.0.1>;tag=a\r\nTo: <sip:x@127.0.0.1>;tag=b\r\nCall-ID: r\r\n"
        f"CSeq: 1 INVITE\r\n{lines}Content-Length: 0\r\n\r\n"
    )
    response = SipMessage.parse(raw.encode())
    assert isinstance(response, SipResponse)
    return response


def test_redirect_targets_by_q_value_then_listed_order() -> None:
    """§8.1.3.4 / §20.10: highest q first, ties as listed; q is a header parameter."""
    response = _redirect(
        "<sip:a@127.0.0.1:5001>;q=0.1, <sip:b@127.0.0.1:5002;transport=tcp>;q=0.9",
        'sip:c@127.0.0.1:5003;q=0.9, "Desk, 2" <sip:d@127.0.0.1:5004>',
        "<sip:e@127.0.0.1:5005>;q=banana, <tel:+15551234>, <sips:f@127.0.0.1:5006>",
        "<sip:g@127.0.0.1:5007;q=0.2>",  # inside the brackets: a URI parameter, not q
    )
    assert redirect_targets(response, limit=10) == [
        "sip:d@127.0.0.1:5004",  # no q: 1.0
        "sips:f@127.0.0.1:5006",  # SIP over TLS (RFC 5630)
        "sip:g@127.0.0.1:5007;q=0.2",
        "sip:b@127.0.0.1:5002;transport=tcp",
        "sip:c@127.0.0.1:5003",
        "sip:a@127.0.0.1:5001",
        "sip:e@127.0.0.1:5005",  # unreadable q: last
    ]
    assert redirect_targets(response, limit=2, skip="sip:d@127.0.0.1:5004") == [
        "sips:f@127.0.0.1:5006",
        "sip:g@127.0.0.1:5007;q=0.2",
    ]
    assert redirect_targets(_redirect("*"), limit=4) == []
