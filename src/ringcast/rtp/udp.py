"""The kernel side of an RTP socket: opened non-blocking of the callee's family, and a
classic BPF filter (Linux SO_ATTACH_FILTER) that drops unwanted payload types unread."""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
from collections.abc import Iterable

from ringcast.inet import IPV6, bind_families

SEND_BUFFER = 64 * 1024  # bytes of SO_SNDBUF per RTP socket

SO_ATTACH_FILTER = 26  # Linux <asm-generic/socket.h>
_BPF_LD_B_ABS, _BPF_ALU_AND_K, _BPF_JEQ_K, _BPF_RET_K = 0x30, 0x54, 0x15, 0x06
_UDP_HEADER = 8  # bytes: a UDP socket filter sees the datagram from its UDP header on


def attach_payload_type_filter(
    sock: socket.socket, payload_types: int | Iterable[int] | None
) -> None:
    """Attach a BPF filter passing only RTP packets of `payload_types` (None or none: drop all).

    One compare per type: ``ld [9]; and #0x7f; jeq #pt1, accept; jeq #pt2, accept; ...; drop``.
    """
    if payload_types is None:
        wanted: list[int] = []
    elif isinstance(payload_types, int):
        wanted = [payload_types & 0x7F]
    else:
        wanted = sorted({pt & 0x7F for pt in payload_types})
    if not wanted:
        prog = [(_BPF_RET_K, 0, 0, 0)]
    else:
        prog = [
            (_BPF_LD_B_ABS, 0, 0, _UDP_HEADER + 1),  # RTP byte 1: marker | payload type
            (_BPF_ALU_AND_K, 0, 0, 0x7F),
        ]
        last = len(wanted) - 1
        for i, pt in enumerate(wanted):
            # true: skip the compares left to reach accept; false: next compare, or drop
            prog.append((_BPF_JEQ_K, last - i, 1 if i == last else 0, pt))
        prog += [
            (_BPF_RET_K, 0, 0, 0xFFFFFFFF),  # accept the whole datagram
            (_BPF_RET_K, 0, 0, 0),  # drop
        ]
    attach_filter(sock, prog)


def attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    """Attach classic BPF `prog` (``(code, jt, jf, k)`` instructions) to `sock`
    (Linux SO_ATTACH_FILTER; the kernel copies the program)."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(code))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def udp_socket(bind_host: str = "0.0.0.0") -> socket.socket:
    """A non-blocking UDP socket of `bind_host`'s family (dual stack for ``::``)."""
    families = bind_families(bind_host)
    if IPV6 not in families:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if len(families) > 1 else 1)
        except OSError:
            s.close()
            raise
    s.setblocking(False)
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    return s
