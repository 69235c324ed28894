"""Error texts are for people: no Python reprs or memory addresses."""

from __future__ import annotations

import pytest

from ringcast.dialer.call import failed_report
from ringcast.errors import MediaError, RingcastError, public_text
from ringcast.media.decode import decode_audio


def test_a_file_that_is_not_audio_says_so_plainly() -> None:
    with pytest.raises(MediaError) as err:
        decode_audio(b"<html>not audio</html>" * 20, source="media at http://m/a.wav")
    assert err.value.message == (
        "media at http://m/a.wav is not audio that can be decoded (WAV, MP3, OGG, FLAC): "
        "Format not recognised."
    )


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        (
            "Error opening <_io.BytesIO object at 0x7f7d166bb1f0>: bad",
            "Error opening the data: bad",
        ),
        ("<function handler at 0x7f00ab>", "<function handler>"),
        ("port 0x10 is fine", "port 0x10 is fine"),
    ],
)
def test_public_text(text: str, clean: str) -> None:
    assert public_text(text) == clean


def test_errors_and_records_are_cleaned_at_the_boundary() -> None:
    assert "0x" not in RingcastError("failed on <socket.socket object at 0xdeadbeef>").message
    record = failed_report("playback failed: <Task at 0x7f0012345678>").fields()
    assert "0x" not in record["error"]
