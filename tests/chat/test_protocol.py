import pytest

from chat import protocol
from chat.protocol import ChatError, Ping, Pong, SendMessage, Typing, parse_client_frame


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"message","content":"  hi  ","nonce":"n1"}', SendMessage(content="hi", nonce="n1")),
        ('{"type":"message","content":"hi"}', SendMessage(content="hi", nonce=None)),
        ('{"type":"message","content":"hi","nonce":null}', SendMessage(content="hi", nonce=None)),
        ('{"type":"typing","is_typing":false}', Typing(is_typing=False)),
        ('{"type":"ping"}', Ping()),
        ('{"type":"pong"}', Pong()),
        ('{"type":"message","content":"' + "é" * 4000 + '"}', SendMessage(content="é" * 4000, nonce=None)),
    ],
)
def test_parses_good_frames(text, expected):
    assert parse_client_frame(text) == expected


@pytest.mark.parametrize(
    ("text", "code", "nonce"),
    [
        ("{", "bad_json", None),
        ("", "bad_json", None),
        ("[" * 100000, "bad_json", None),
        ("[]", "bad_frame", None),
        ('"message"', "bad_frame", None),
        ('{"type":"shout"}', "bad_frame", None),
        ("{}", "bad_frame", None),
        ('{"type":"message"}', "bad_frame", None),
        ('{"type":"message","content":5,"nonce":"a"}', "bad_frame", "a"),
        ('{"type":"message","content":"hi","nonce":5}', "bad_frame", None),
        ('{"type":"message","content":"hi","nonce":"' + "n" * 65 + '"}', "bad_frame", None),
        ('{"type":"message","content":"   \\n ","nonce":"b"}', "empty", "b"),
        ('{"type":"message","content":"' + "x" * 4001 + '"}', "too_long", None),
        ('{"type":"typing","is_typing":"yes"}', "bad_frame", None),
        ('{"type":"typing"}', "bad_frame", None),
    ],
)
def test_rejects_bad_frames_with_the_contract_code(text, code, nonce):
    with pytest.raises(ChatError) as raised:
        parse_client_frame(text)
    assert raised.value.code == code
    assert raised.value.nonce == nonce
    frame = raised.value.frame()
    assert frame["type"] == "error" and frame["code"] == code and frame["nonce"] == nonce


def test_encode_is_compact_and_keeps_unicode():
    assert protocol.encode({"type": "notice", "content": "héllo"}) == '{"type":"notice","content":"héllo"}'


def test_rate_limited_error_carries_retry_after():
    frame = ChatError("rate_limited", "slow down", retry_after=1.5).frame()
    assert frame == {"type": "error", "code": "rate_limited", "detail": "slow down", "nonce": None, "retry_after": 1.5}
