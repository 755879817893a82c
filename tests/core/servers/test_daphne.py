"""core.servers.daphne's patches, as a daphne worker has them (install() runs at its start)."""

import pytest
from autobahn import util
from autobahn.websocket import protocol
from autobahn.websocket.protocol import PreparedMessage

from core.servers import daphne


def test_autobahn_debug_arguments_are_coloured_only_when_a_debug_line_is_written(monkeypatch):
    calls: list[object] = []

    def counting_hlval(value, color="white", bold=True):
        calls.append(value)
        return util.hlval(value, color=color, bold=bold)

    monkeypatch.setattr(protocol, "hlval", counting_hlval)
    monkeypatch.setattr(protocol, "hltype", util.hltype)
    daphne._colour_debug_arguments_lazily()
    lazy = protocol.hlval(1234)
    assert calls == [], "nothing coloured while the argument is only built"
    assert f"{lazy}" == util.hlval(1234) and str(lazy) == util.hlval(1234) and calls == [1234, 1234]
    sent = protocol.hltype(test_autobahn_debug_arguments_are_coloured_only_when_a_debug_line_is_written)
    assert "test_autobahn_debug_arguments" in f"{sent}"


# ---- SocketFlow's own writes ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 200_000])
def test_a_frame_is_the_one_autobahn_builds_for_the_same_text(size):
    text = "é" * (size // 2) + "x" * (size % 2)
    prepared = PreparedMessage(text.encode(), False, False, True)
    assert daphne._frame(text) == prepared.payloadHybi
    assert daphne._frame(text) is daphne._frame(text), "built once for a text sent to many sockets"


class FakeSocket:
    def __init__(self, takes: int | None) -> None:
        self.takes, self.sent = takes, b""

    def send(self, data: bytes) -> int:
        if self.takes == 0:
            raise BlockingIOError
        taken = data if self.takes is None else data[: self.takes]
        self.sent += taken
        return len(taken)


class FakeTransport:
    """The attributes of Twisted's TCP transport that daphne._write reads."""

    TLS = False
    connected = True
    disconnecting = False

    def __init__(self, takes: int | None = None, buffered: bytes = b"") -> None:
        self.socket = FakeSocket(takes)
        self._tempDataBuffer: list[bytes] = []
        self.dataBuffer, self.offset = buffered, 0
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data


def test_a_frame_goes_on_the_socket_at_once_when_nothing_waits_and_the_rest_through_twisted():
    whole = FakeTransport()
    daphne._write(whole, b"abcdef")
    assert (whole.socket.sent, whole.written) == (b"abcdef", b"")
    partly = FakeTransport(takes=2)
    daphne._write(partly, b"abcdef")
    assert (partly.socket.sent, partly.written) == (b"ab", b"cdef")
    full = FakeTransport(takes=0)
    daphne._write(full, b"abcdef")
    assert (full.socket.sent, full.written) == (b"", b"abcdef")


def test_behind_bytes_already_buffered_or_over_tls_a_frame_waits_its_turn_in_twisted():
    behind = FakeTransport(buffered=b"earlier")
    daphne._write(behind, b"later")
    assert (behind.socket.sent, behind.written) == (b"", b"later")
    queued = FakeTransport()
    queued._tempDataBuffer.append(b"earlier")
    daphne._write(queued, b"later")
    assert queued.socket.sent == b""
    tls = FakeTransport()
    tls.TLS = True
    daphne._write(tls, b"secret")
    assert (tls.socket.sent, tls.written) == (b"", b"secret")


# ---- request bodies reach the application as they came ----------------------------------------------
@pytest.mark.multiworker
@pytest.mark.asyncio
async def test_a_body_twisted_cannot_parse_as_a_form_still_gets_the_apis_own_answer(cluster):
    """Twisted parsed a POST's form or multipart body for daphne, which never reads the result;
    a body it could not parse was answered with a bare 400 and a dropped connection before the
    application saw it. The API answers it as any malformed body: 400 `bad_json` (docs/protocol.md)."""
    import httpx

    headers = {"Authorization": f"Bearer {cluster.tokens['user0']}", "Content-Type": "multipart/form-data; boundary=xyz"}
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(f"{cluster.http(0)}/api/assistant/stream", headers=headers, content=b"not a multipart body")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_json", refused.text
        form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        refused = await http.post(f"{cluster.http(1)}/api/assistant/stream", headers=form, content=b"message=hi")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_json", refused.text
