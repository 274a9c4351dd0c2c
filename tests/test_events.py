"""Each file of events/ through its function, as `sam local invoke -e events/<file> <Function>` would."""

from __future__ import annotations

import json

from support import EVENTS, ROUTES, Api, context_for, load_event, load_function

# In the order a bot would send them on an empty room, with the status each must get.
SCRIPT = [
    ("append_message.json", 201),
    ("append_image_message.json", 201),
    ("append_assistant_message.json", 201),
    ("append_message.json", 200),  # a retried append is stored once
    ("list_messages.json", 200),
    ("edit_message.json", 200),
    ("set_reactions.json", 200),
    ("delete_message.json", 200),
    ("get_room.json", 200),
    ("append_tool_call.json", 201),
    ("append_tool_result.json", 201),
    ("append_tool_call.json", 200),  # a retried tool call is stored once (by its first tool call id)
    ("list_messages_budgeted.json", 200),
    ("set_limit.json", 200),
    ("backfill_batch.json", 201),  # the older page the re-backfill request asked for
    ("compact_room.json", 200),
    ("discard_rebackfill.json", 204),
    ("clear_room.json", 204),
    ("get_room.json", 200),
]


def test_every_event_file_is_played():
    played = {name for name, _ in SCRIPT} | {"scheduled_reap.json"}
    assert played == {path.name for path in EVENTS.glob("*.json")}


def test_every_route_has_an_event():
    """One payload 2.0 event per route of template.yaml, for `sam local invoke -e`."""
    covered = {load_event(name)["routeKey"] for name, _ in SCRIPT}
    assert covered == {f"{route.method} {route.path}" for route in ROUTES}


def test_api_events_in_order(backend):
    api = Api(backend.env)
    replies = {}
    for name, status in SCRIPT:
        reply = api.invoke(load_event(name))
        assert reply.status == status, (name, reply.body)
        replies.setdefault(name, []).append(reply)

    listed = replies["list_messages.json"][0].body
    assert listed["room_id"] == "discord:1234" and listed["version"] == 3
    assert listed["messages"][0]["role"] == "system" and "Sage" in listed["messages"][0]["content"]
    assert [message["role"] for message in listed["messages"][1:]] == ["user", "user", "assistant"]

    after_delete = replies["delete_message.json"][0].body["messages"]
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in after_delete[1:]]
    assert any("[deleted at " in text for text in texts)
    assert any("[Reactions: " in text for text in texts)
    assert any(isinstance(m["content"], list) and m["content"][1]["type"] == "image_url" for m in after_delete[1:])

    state = replies["get_room.json"][0].body
    assert (state["room_id"], state["version"], state["message_count"]) == ("discord:1234", 6, 3)
    budgeted = replies["list_messages_budgeted.json"][0].body
    assert budgeted["version"] == 8 and budgeted["tokens"] <= 1000 and budgeted["truncated"] is True
    assert [message["role"] for message in budgeted["messages"]] == ["system", "assistant", "assistant", "tool"]
    assert budgeted["messages"][2]["tool_calls"][0]["id"] == budgeted["messages"][3]["tool_call_id"]
    limit = replies["set_limit.json"][0].body
    assert limit["room_id"] == "discord:1234" and limit["rebackfill_requested"] is True
    backfilled = replies["backfill_batch.json"][0].body
    assert backfilled["stored"] == 2 and [m["content"][:18] for m in backfilled["messages"][1:3]] == [
        "[Message ID: 998] ",
        "[Message ID: 999] ",
    ]
    compacted = replies["compact_room.json"][0].body
    assert "bob asked about the trip" in compacted["messages"][0]["content"]  # the summary, in the prompt
    assert len(compacted["messages"]) == 1 + 4  # 998, 999 and 1001 gave way to the summary
    assert [m["role"] for m in compacted["messages"][-2:]] == ["assistant", "tool"]  # the tool exchange stays
    final = replies["get_room.json"][1].body
    assert (final["message_count"], final["rebackfill_requested"], final["version"]) == (0, False, 13)
    assert final["summary"] is None  # the clear removed it
    assert final["limit"] == limit["limit"]


def test_scheduled_reap_event(backend):
    api = Api(backend.env)
    assert api.invoke(load_event("append_message.json")).status == 201
    fresh = load_event("append_message.json")
    fresh.update(rawPath="/rooms/discord:5678/messages", body=json.dumps({"role": "user", "content": "hi"}))
    assert api.invoke(fresh).status == 201
    reaper = load_function("ReaperFunction", backend.env)
    assert reaper(load_event("scheduled_reap.json"), context_for("ReaperFunction")) == {"reaped": 0}
    # discord:1234 was last active at the epoch, long past the default idle time
    backend.client.hset("sg:conversation:{discord:1234}:meta", "active_at", 1)
    backend.client.zadd("sg:conversation:activity", {"discord:1234": 1})
    assert reaper(load_event("scheduled_reap.json"), context_for("ReaperFunction")) == {"reaped": 1}
    assert backend.keys("*{discord:*") == [
        "sg:conversation:{discord:5678}",
        "sg:conversation:{discord:5678}:ids",
        "sg:conversation:{discord:5678}:meta",
        "sg:conversation:{discord:5678}:ver",
    ]
    assert backend.client.zrange("sg:conversation:activity", 0, -1) == ["discord:5678"]
