"""RTP/RTCP (RFC 3550), RFC 4733 events, one shared pacing clock, per-call sessions.

No signalling, no database: the dialer passes in what SDP negotiated.
"""

from __future__ import annotations

from ringcast.rtp.clock import RtpClock
from ringcast.rtp.ports import PortAllocator
from ringcast.rtp.session import MediaSession, PlayResult, SessionState

__all__ = ["MediaSession", "PlayResult", "PortAllocator", "RtpClock", "SessionState"]
