"""RTP/RTCP (RFC 3550), RFC 4733 events, one shared pacing clock, per-call sessions.

No signalling, no database: the dialer passes in what SDP negotiated::

    clock = RtpClock()                      # one per process
    ports = PortAllocator(20000, 29999)     # --rtp-ports
    clock.start()
    media = await MediaSession.open(clock, ports, bind_host="0.0.0.0")
    offer = MediaOffer(host=public_ip, port=media.local_port)   # before the INVITE
    ...                                     # 2xx: call.answer is a MediaAnswer
    media.start(a.host, a.port, a.payload_type, a.codec, a.dtmf_payload_type,
                a.receive_dtmf_payload_type)  # events: send with the first, receive on both
    result = await media.play(prompt)       # PlayResult(dtmf, optout, completed)
    await media.close()                     # RTCP BYE, ports back
    await clock.stop()                      # at shutdown
"""

from __future__ import annotations

from ringcast.rtp.clock import RtpClock
from ringcast.rtp.ports import PortAllocator
from ringcast.rtp.session import MediaSession
from ringcast.rtp.state import PlayResult, SessionState

__all__ = ["MediaSession", "PlayResult", "PortAllocator", "RtpClock", "SessionState"]
