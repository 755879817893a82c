import pytest

from core.sse import KEEPALIVE, encode_comment, encode_event


def test_event_with_name_json_data_and_id():
    assert encode_event(event="token", data={"index": 0, "token": "hi "}, id="abc:1") == (
        'event: token\ndata: {"index":0,"token":"hi "}\nid: abc:1\n\n'
    )


def test_plain_data_only():
    assert encode_event(data="[DONE]") == "data: [DONE]\n\n"


def test_newlines_in_data_become_several_data_lines_and_cannot_forge_fields():
    assert encode_event(data="one\nevent: evil\r\nthree\rfour") == "data: one\ndata: event: evil\ndata: three\ndata: four\n\n"


def test_json_keeps_unicode_and_escapes_newlines():
    assert encode_event(event="token", data={"token": "é\n"}) == 'event: token\ndata: {"token":"é\\n"}\n\n'


def test_empty_string_data_is_one_empty_data_line():
    assert encode_event(data="") == "data: \n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_event_names_and_ids_must_be_single_lines(bad):
    with pytest.raises(ValueError):
        encode_event(event=bad, data="x")
    with pytest.raises(ValueError):
        encode_event(data="x", id=bad)


def test_comments_and_keepalive():
    assert encode_comment("keepalive") == KEEPALIVE == ": keepalive\n\n"
    assert encode_comment("a\nb") == ": a\n: b\n\n"
