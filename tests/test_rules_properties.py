"""Properties of the pure room rules, checked against the plain model in tests/room_model.py."""

from __future__ import annotations

import room_model as model
from hypothesis import given, settings
from hypothesis import strategies as st

from room_history import rules
from room_history.errors import MessageNotFound
from support import IMAGE

PROPERTY = settings(max_examples=200, deadline=None)

AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
FILE = {"type": "file", "file": {"file_id": "file-1"}}

# Ids from few characters, so that many are prefixes of others; and ids of any printable characters.
short_ids = st.text("12", min_size=1, max_size=3)
ids = st.one_of(
    short_ids,
    st.text(st.characters(exclude_categories=("Cc", "Cs", "Z"), exclude_characters="{}]"), min_size=1, max_size=8),
)
# Bodies with brackets and unicode that cannot spell a marker or a tag (no 'M', 'R', 'd'): those have their own tests.
bodies = st.text(" ab[]:x,ü🎉❤️", max_size=12)
atoms = st.text("ab x,👍❤️🎉ü", max_size=4)
reactions = st.recursive(  # balanced brackets, unicode, sometimes empty
    atoms, lambda inner: st.builds(lambda a, b, c: f"{a}[{b}]{c}", atoms, inner, inner), max_leaves=6
)
stamps = st.datetimes().map(lambda moment: moment.isoformat())
media = st.sampled_from([IMAGE, AUDIO, FILE])


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


text_parts = st.builds(text_part, bodies)


def core_find(turns: list[dict], message_id: str) -> int | None:
    try:
        return rules.find_turn(turns, message_id)
    except MessageNotFound:
        return None


def core_changed(content, message_id: str, op: str, value):
    """The core's rules composed as room_history.history composes them for one change."""
    if op == "edit":
        return rules.edit_content(content, value)
    text = rules.message_text(content)
    if op == "delete":
        return rules.with_message_text(content, rules.mark_deleted(text, message_id, value))
    return rules.with_message_text(content, rules.set_reactions(text, message_id, value))


@st.composite
def multimodal(draw, marked_id=None):
    """Parts in any order: media, and text parts; the first text part carries marked_id's marker, if given,
    and later text parts may carry markers that must not count."""
    parts = draw(st.lists(st.one_of(media, text_parts), max_size=4))
    texts = [index for index, part in enumerate(parts) if part["type"] == "text"]
    if marked_id is not None:
        marked = text_part(f"{draw(bodies)}{rules.marker(marked_id)}{draw(bodies)}")
        if texts:
            parts[texts[0]] = marked
        else:
            texts = [draw(st.integers(0, len(parts)))]
            parts.insert(texts[0], marked)
    for index in texts[1:]:
        if draw(st.booleans()):
            parts[index] = text_part(f"{rules.marker(draw(ids))} {parts[index]['text']}")
    return parts or [IMAGE]


@PROPERTY
@given(st.one_of(st.none(), ids).flatmap(multimodal), ids)
def test_only_the_first_text_part_carries_the_marker(content, absent):
    turn = {"role": "user", "content": content}
    assert rules.message_id_in(content) == model.turn_id(content)
    in_any_part = [found for part in content if part["type"] == "text" for found in model.MARKER.findall(part["text"])]
    for message_id in [absent, *in_any_part]:
        assert core_find([turn], message_id) == model.find([turn], message_id)


@PROPERTY
@given(st.lists(short_ids, min_size=1, max_size=8, unique=True), st.lists(short_ids, min_size=1, max_size=5))
def test_ids_that_are_prefixes_of_other_ids_find_only_their_own_turn(stored, probes):
    turns = [{"role": "user", "content": f"[Message ID: {message_id}] hi"} for message_id in stored]
    for message_id in probes:
        assert core_find(turns, message_id) == model.find(turns, message_id)
        assert core_find(turns, message_id) == (stored.index(message_id) if message_id in stored else None)


@PROPERTY
@given(ids, bodies, bodies, st.lists(stamps, min_size=1, max_size=4))
def test_repeated_deletes_insert_the_first_stamp_once_right_after_the_marker(message_id, before, after, times):
    marker = rules.marker(message_id)
    text = f"{before}{marker}{after}"
    for stamp in times:
        text = rules.mark_deleted(text, message_id, stamp)
    assert text == f"{before}{marker} [deleted at {times[0]}]{after}"


@PROPERTY
@given(ids, bodies, bodies, st.lists(reactions, min_size=1, max_size=4))
def test_reactions_replace_the_tag_right_after_the_marker_and_empty_removes_it(message_id, before, after, values):
    marker = rules.marker(message_id)
    text = f"{before}{marker}{after}"
    for value in values:
        rules.validate_reactions(value)  # balanced brackets: accepted
        text = rules.set_reactions(text, message_id, value)
    tag = f" [Reactions: {values[-1]}]" if values[-1] else ""
    assert text == f"{before}{marker}{tag}{after}"
    assert rules.set_reactions(text, message_id, "") == f"{before}{marker}{after}"


@PROPERTY
@given(st.lists(media, min_size=1, max_size=3), st.lists(st.one_of(media, text_parts), max_size=3), bodies)
def test_a_string_edit_keeps_every_media_part_in_order(media_parts, more, new_text):
    old = [text_part("[Message ID: 1] old"), *media_parts, *more]
    kept = [part for part in old if part["type"] != "text"]
    assert rules.edit_content(old, new_text) == [text_part(new_text), *kept] == model.edited(old, new_text)
    assert rules.edit_content(old, [text_part(new_text)]) == [text_part(new_text)]  # a list replaces exactly


changes = st.one_of(
    st.tuples(st.just("delete"), stamps),
    st.tuples(st.just("react"), reactions),
    st.tuples(st.just("edit"), st.one_of(bodies, st.lists(st.one_of(media, text_parts), max_size=2))),
)


@PROPERTY
@given(st.data(), ids, st.lists(changes, min_size=1, max_size=8))
def test_any_sequence_of_changes_matches_the_model(data, message_id, steps):
    marker = rules.marker(message_id)
    content = data.draw(st.one_of(bodies.map(lambda body: f"{marker}{body}"), multimodal(message_id)))
    for op, value in steps:
        if op == "edit":  # an edit keeps the turn's marker at the start of its first text part
            value = f"{marker}{value}" if isinstance(value, str) else [text_part(f"{marker} edited"), *value]
        expected = model.changed(content, op, value)
        content = core_changed(content, message_id, op, value)
        assert content == expected, (op, value)


# A turn is found by its own (first) marker, and changed at the tags right after it: a marker quoted later in the
# text, or a body mentioning a tag, is plain text.


@PROPERTY
@given(short_ids, short_ids, bodies)
def test_a_turn_quoting_another_marker_is_not_that_message(own, quoted, body):
    quoting = {"role": "assistant", "content": f"[Message ID: {own}] you said [Message ID: {quoted}]{body}"}
    turns = [{"role": "user", "content": f"[Message ID: {quoted}] hi"}, quoting]
    assert core_find(turns, quoted) == model.find(turns, quoted) == (1 if quoted == own else 0)


@PROPERTY
@given(ids, bodies, stamps)
def test_a_body_mentioning_a_deleted_tag_is_still_marked_deleted(message_id, body, stamp):
    text = f"{rules.marker(message_id)} the log said ' [deleted at 2026-01-01T00:00:00Z]'{body}"
    assert rules.mark_deleted(text, message_id, stamp) == model.deleted(text, stamp)


@PROPERTY
@given(ids, bodies, reactions)
def test_setting_reactions_keeps_body_text_that_looks_like_a_tag(message_id, body, value):
    text = f"{rules.marker(message_id)} the bot echoed ' [Reactions: 👍 x1]'{body}"
    assert rules.set_reactions(text, message_id, value) == model.reacted(text, value)
