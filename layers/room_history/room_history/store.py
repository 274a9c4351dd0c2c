"""The Redis store: every key name, the scripts, and the one round trip of each operation."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import rows, scripts
from .errors import StoreUnavailable, VersionMismatch
from .settings import Settings

log = logging.getLogger(__name__)

# Failures that mean "Redis cannot serve this now", as opposed to a bug of ours.
UNAVAILABLE = (
    redis.ConnectionError,  # also BusyLoadingError and authentication failures
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a failover in progress
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ClusterError,  # also ClusterDownError
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


def connect(settings: Settings) -> redis.Redis | redis.RedisCluster:
    """One client per container, with short timeouts and no retries of its own.

    A write whose connection dropped or timed out may have run: sending it again could store a
    turn twice, so the client never does (RoomStore.read retries reads itself). A cluster client
    still refreshes its slot map after a failure.
    """
    options = dict(
        decode_responses=True,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        if settings.redis_cluster:
            return redis.RedisCluster.from_url(settings.redis_url, **options)
        return redis.Redis.from_url(settings.redis_url, **options)
    except (*UNAVAILABLE, redis.exceptions.RedisClusterException) as error:  # no node reachable at start
        raise StoreUnavailable(error) from error


def _translate_unavailable(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except UNAVAILABLE as error:
            raise StoreUnavailable(error) from error
        except redis.ResponseError as error:
            # a script running too long, writes refused for want of replicas or after a failed snapshot
            if str(error).startswith(("BUSY ", "NOREPLICAS", "MISCONF")):
                raise StoreUnavailable(error) from error
            raise

    return wrapper


@dataclass(frozen=True)
class RoomKeys:
    """All keys of one room share the {room_id} hash tag, so they live in one cluster slot."""

    turns: str
    version: str
    meta: str

    @classmethod
    def of(cls, prefix: str, room_id: str) -> RoomKeys:
        base = f"{prefix}:{{{room_id}}}"
        return cls(turns=base, version=f"{base}:ver", meta=f"{base}:meta")

    def __iter__(self):
        return iter((self.turns, self.version, self.meta))


@dataclass(frozen=True)
class RoomSnapshot:
    version: int
    limit: int
    rebackfill_requested: bool
    active_at_ms: int | None
    rows: list[str]


@dataclass(frozen=True)
class AppendResult:
    stored: bool
    version: int
    rows: list[str]


class RoomStore:
    """Keys and scripts of every room under one prefix; all methods are one round trip."""

    def __init__(self, client: redis.Redis | redis.RedisCluster, key_prefix: str, default_limit: int):
        self.client = client
        self.key_prefix = key_prefix
        self.default_limit = default_limit
        # Outside every room's slot by design (no hash tag): updated beside the room's script.
        self.activity_index = f"{key_prefix}:activity"
        self.read_room_script = client.register_script(scripts.READ_ROOM)
        self.append_turn_script = client.register_script(scripts.APPEND_TURN)
        self.replace_turn_script = client.register_script(scripts.REPLACE_TURN)
        self.set_limit_script = client.register_script(scripts.SET_LIMIT)
        self.clear_turns_script = client.register_script(scripts.CLEAR_TURNS)
        self.discard_rebackfill_script = client.register_script(scripts.DISCARD_REBACKFILL)
        self.reap_room_script = client.register_script(scripts.REAP_ROOM)
        self.unindex_idle_room_script = client.register_script(scripts.UNINDEX_IDLE_ROOM)

    def keys(self, room_id: str) -> RoomKeys:
        return RoomKeys.of(self.key_prefix, room_id)

    @_translate_unavailable
    def read(self, room_id: str) -> RoomSnapshot:
        """One atomic read; the only call retried on a dropped connection (a read can run twice)."""
        keys, args = list(self.keys(room_id)), [self.default_limit]
        try:
            reply = self._run(self.read_room_script, keys, args)
        except redis.ConnectionError:  # the connection dropped mid-read: one new connection, one new try
            reply = self._run(self.read_room_script, keys, args)
        version, limit, rebackfill, active_at, rows = reply
        return RoomSnapshot(
            version=int(version),
            limit=int(limit),
            rebackfill_requested=bool(rebackfill),
            active_at_ms=int(active_at) if active_at is not None else None,
            rows=list(rows),
        )

    @_translate_unavailable
    def append(
        self, room_id: str, row: str, message_id: str | None, now_ms: int, expected_version: int | None
    ) -> AppendResult:
        """Store a row (or find its message id already in the window) and return the window as it now is."""
        needle = rows.marker_needle(message_id) if message_id is not None else ""
        args = [row, needle, message_id or "", self.default_limit, now_ms, _optional(expected_version)]
        reply = self._checked(self._write_room(self.append_turn_script, room_id, args, now_ms), expected_version)
        return AppendResult(stored=reply[0] == 1, version=int(reply[1]), rows=list(reply[2]))

    @_translate_unavailable
    def replace_turn(
        self, room_id: str, read_version: int, index_from_end: int, old_row: str, new_row: str, now_ms: int
    ) -> tuple[bool, int]:
        """Compare-and-set one row; returns (won, version now)."""
        args = [read_version, index_from_end, old_row, new_row, now_ms]
        won, version = self._write_room(self.replace_turn_script, room_id, args, now_ms)
        return won == 1, int(version)

    @_translate_unavailable
    def set_limit(self, room_id: str, limit: int, now_ms: int, expected_version: int | None) -> tuple[int, bool]:
        """Returns (version, rebackfill requested)."""
        args = [limit, self.default_limit, now_ms, _optional(expected_version)]
        reply = self._checked(self._write_room(self.set_limit_script, room_id, args, now_ms), expected_version)
        return int(reply[1]), bool(reply[2])

    @_translate_unavailable
    def clear(self, room_id: str, now_ms: int, expected_version: int | None) -> int:
        args = [now_ms, _optional(expected_version)]
        return int(self._checked(self._write_room(self.clear_turns_script, room_id, args, now_ms), expected_version)[1])

    @_translate_unavailable
    def discard_rebackfill(self, room_id: str, now_ms: int, expected_version: int | None) -> int:
        args = [now_ms, _optional(expected_version)]
        reply = self._write_room(self.discard_rebackfill_script, room_id, args, now_ms)
        return int(self._checked(reply, expected_version)[1])

    @_translate_unavailable
    def idle_rooms(self, cutoff_ms: int, count: int) -> list[str]:
        """Rooms whose indexed activity is at or before the cutoff, oldest first."""
        return self.client.zrangebyscore(self.activity_index, "-inf", cutoff_ms, start=0, num=count)

    @_translate_unavailable
    def reap(self, room_ids: list[str], cutoff_ms: int) -> int:
        """Remove the rooms still idle at the cutoff; returns how many were removed."""
        calls = [(self.reap_room_script, list(self.keys(room)), [cutoff_ms]) for room in room_ids]
        replies = [_raised(reply) for reply in self._pipelined(calls)]
        index_updates = []
        for room, (removed, detail) in zip(room_ids, replies, strict=True):
            if removed:
                index_updates.append((self.unindex_idle_room_script, [self.activity_index], [room, cutoff_ms]))
            else:  # written since it was indexed: the room's own clock is the truth
                index_updates.append((None, [self.activity_index], {room: detail}))
        for reply in self._pipelined(index_updates):
            _raised(reply)
        return sum(1 for removed, deleted in replies if removed and deleted)

    def _write_room(self, script, room_id: str, args: list, now_ms: int):
        """Run a room script and touch the activity index in the same round trip.

        The index is a hint (the reaper trusts the room's own clock), so a failed touch is logged,
        not raised: the room's write happened, and answering an error would invite a second one.
        """
        index_touch = (None, [self.activity_index], {room_id: now_ms})
        reply, touched = self._pipelined([(script, list(self.keys(room_id)), args), index_touch])
        if isinstance(touched, Exception):
            log.warning("activity index not updated for room %s: %s", room_id, touched)
        return _raised(reply)

    def _run(self, script, keys: list[str], args: list):
        """One script call, through the same path as every other."""
        return _raised(self._pipelined([(script, keys, args)])[0])

    def _pipelined(self, calls: list[tuple]) -> list:
        """Scripts (and ZADDs, script None) in one pipeline, replies in order, errors in place.

        The one way scripts are sent, reads and writes alike. EVALSHA directly: `script(client=pipe)` would
        cost a SCRIPT EXISTS round trip on every execute. Calls answered NOSCRIPT (Redis restarted or failed
        over) are loaded and sent again, here and nowhere else.
        """
        replies = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args in (calls[index] for index in pending):
                if script is None:
                    pipe.zadd(keys[0], args, gt=True)
                else:  # ClusterPipeline blocks its evalsha() method, not the command
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            for index, reply in zip(pending, pipe.execute(raise_on_error=False), strict=True):
                replies[index] = reply
            pending = [index for index in pending if isinstance(replies[index], redis.exceptions.NoScriptError)]
            if not pending or attempt == 2:
                return replies
            for script in {calls[index][0] for index in pending}:
                script.sha = self.client.script_load(script.script)
        return replies

    @staticmethod
    def _checked(reply: list, expected_version: int | None) -> list:
        if reply[0] == -1:
            raise VersionMismatch(expected_version, int(reply[1]))
        return reply


def _optional(version: int | None) -> str | int:
    return "" if version is None else version


def _raised(reply):
    if isinstance(reply, Exception):
        raise reply
    return reply
