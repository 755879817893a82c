import pytest
from django.test import RequestFactory

from core.sse import KEEPALIVE, after_the_end, encode_comment, encode_event, last_event_id


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


@pytest.mark.parametrize(
    ("end", "after", "stop"),
    [(None, None, False), (None, 5, False), (5, None, False), (5, 4, False), (5, 5, True), (5, 6, True), (0, 0, True)],
)
def test_after_the_end_is_a_204_only_for_a_reader_at_or_past_the_end_of_an_ended_stream(end, after, stop):
    """``end`` None: still running; ``after`` None: the reader sent no Last-Event-ID (it
    starts from the beginning, so it has not seen the end)."""
    response = after_the_end(end=end, after=after)
    assert (response is not None) == stop
    if response is not None:
        assert response.status_code == 204 and response.content == b"" and response["Cache-Control"] == "no-cache"


def test_last_event_id_is_the_header_else_the_query_and_empty_is_none():
    factory = RequestFactory()
    assert last_event_id(factory.get("/e?last_event_id=q", headers={"Last-Event-ID": "h"})) == "h"
    assert last_event_id(factory.get("/e?last_event_id=q")) == "q"
    assert last_event_id(factory.get("/e?last_event_id=", headers={"Last-Event-ID": ""})) is None
    assert last_event_id(factory.get("/e")) is None
