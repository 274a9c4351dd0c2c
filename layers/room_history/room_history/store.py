"""The Redis store: every key name, the scripts, and the one round trip of each operation."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import credentials, rows, rules, scripts
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
    redis.exceptions.AskError,  # also MovedError: a slot moved (failover, resharding) and the transaction did not run
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
    url = settings.redis_url
    if settings.redis_secret_arn:  # credentials from Secrets Manager, re-read when Redis refuses them
        options.update(credentials.secret_options(settings.redis_secret_arn, url))
        # TLS is up to the connection class chosen above; a rediss:// URL would put plain SSLConnection back (cluster)
        url = url.replace("rediss://", "redis://", 1)
    try:
        if settings.redis_cluster:
            # Re-read the slot map on every connection error or redirect: a transaction's pipeline counts
            # failures from zero, so with the default of every 5th it would never re-read it, and the
            # rooms of a failed-over master would stay unreachable for as long as the container lives.
            return redis.RedisCluster.from_url(url, reinitialize_steps=1, **options)
        return redis.Redis.from_url(url, **options)
    except (*UNAVAILABLE, redis.exceptions.RedisClusterException) as error:  # no node reachable at start
        raise StoreUnavailable(error) from error


def _translate_unavailable(method):
    @functools.wraps(method)
    def wrapper(store, *args, **kwargs):
        try:
            return method(store, *args, **kwargs)
        except UNAVAILABLE as error:
            if isinstance(error, redis.exceptions.ReadOnlyError) and isinstance(store.client, redis.Redis):
                # A primary demoted by a failover keeps its connections: drop them (nothing is sent
                # again), so the next call connects anew and reaches the new primary behind the endpoint.
                store.client.connection_pool.disconnect()
            raise StoreUnavailable(error) from error
        except redis.exceptions.RedisClusterException as error:  # a slot map rebuilt, a slot not covered
            if isinstance(error, redis.exceptions.CrossSlotTransactionError | redis.exceptions.InvalidPipelineStack):
                raise  # a bug of ours, not Redis being unavailable
            raise StoreUnavailable(error) from error
        except redis.ResponseError as error:
            # a script running too long, writes refused for want of replicas or after a failed snapshot
            reason = str(error).split("caused error: ", 1)[-1]  # a pipeline names the command before it
            if reason.startswith(("BUSY ", "NOREPLICAS", "MISCONF")):
                raise StoreUnavailable(error) from error
            raise

    return wrapper


@dataclass(frozen=True)
class RoomKeys:
    """All keys of one room share the {room_id} hash tag, so they live in one cluster slot."""

    turns: str
    version: str
    meta: str
    dedupe: str

    @classmethod
    def of(cls, prefix: str, room_id: str) -> RoomKeys:
        base = f"{prefix}:{{{room_id}}}"
        return cls(turns=base, version=f"{base}:ver", meta=f"{base}:meta", dedupe=f"{base}:ids")

    def __iter__(self):
        return iter((self.turns, self.version, self.meta, self.dedupe))


@dataclass(frozen=True)
class RoomSnapshot:
    """A room as of one version; `rows` is None when a conditional read found the caller's copy current."""

    version: int
    limit: int
    rebackfill_requested: bool
    active_at_ms: int | None
    summary: str | None
    rows: list[str] | None


@dataclass(frozen=True)
class WriteResult:
    """What a write did, and the window right after it (read in the same transaction)."""

    status: int
    version: int
    rows: list[str]
    summary: str | None
    details: list


# A write touches the reaper's activity index (another slot, so another round trip) at most this often per room.
INDEX_REFRESH_MS = 60_000
META_FIELDS = ("limit", "rebackfill", "active_at", "summary")


class RoomStore:
    """Keys and scripts of every room under one prefix; every method is one round trip (a transaction)."""

    def __init__(self, client: redis.Redis | redis.RedisCluster, key_prefix: str, default_limit: int):
        self.client = client
        self.key_prefix = key_prefix
        self.default_limit = default_limit
        # LRANGE reads at most this many rows; the window size (known only with the reply) cuts the rest.
        self.max_rows = max(default_limit, rules.MAX_LIMIT)
        # Outside every room's slot by design (no hash tag): touched after the room's write when it is due.
        self.activity_index = f"{key_prefix}:activity"
        self.read_if_changed_script = client.register_script(scripts.READ_ROOM_IF_CHANGED)
        self.append_turn_script = client.register_script(scripts.APPEND_TURN)
        self.append_batch_script = client.register_script(scripts.APPEND_BATCH)
        self.replace_turn_script = client.register_script(scripts.REPLACE_TURN)
        self.compact_script = client.register_script(scripts.COMPACT)
        self.set_limit_script = client.register_script(scripts.SET_LIMIT)
        self.clear_turns_script = client.register_script(scripts.CLEAR_TURNS)
        self.discard_rebackfill_script = client.register_script(scripts.DISCARD_REBACKFILL)
        self.reap_room_script = client.register_script(scripts.REAP_ROOM)
        self.unindex_idle_room_script = client.register_script(scripts.UNINDEX_IDLE_ROOM)

    def keys(self, room_id: str) -> RoomKeys:
        return RoomKeys.of(self.key_prefix, room_id)

    @_translate_unavailable
    def read(self, room_id: str, unless_version: int | None = None) -> RoomSnapshot:
        """One atomic read (MULTI/EXEC of plain reads, so it also runs during a failover's write pause).

        With `unless_version`, a room still at that version answers without its rows. The only call
        retried on a dropped connection: a read can run twice.
        """
        try:
            return self._read(room_id, unless_version)
        except redis.ConnectionError:  # the connection dropped mid-read: one new connection, one new try
            return self._read(room_id, unless_version)

    def _read(self, room_id: str, unless_version: int | None) -> RoomSnapshot:
        keys = self.keys(room_id)
        if unless_version is not None:
            call = (self.read_if_changed_script, list(keys), [unless_version, self.max_rows])
            reply = _raised(self._send([call], transaction=False)[0])  # one script: atomic by itself
            if len(reply) == 1:
                return RoomSnapshot(int(reply[0]), 0, False, None, None, None)
            version, limit, rebackfill, active_at, summary, rows = reply
        else:
            pipe = self.client.pipeline(transaction=True)
            pipe.get(keys.version)
            pipe.hmget(keys.meta, META_FIELDS)
            pipe.lrange(keys.turns, -self.max_rows, -1)
            version, (limit, rebackfill, active_at, summary), rows = pipe.execute()
        limit = int(limit) if limit is not None else self.default_limit
        return RoomSnapshot(
            version=int(version or 0),
            limit=limit,
            rebackfill_requested=rebackfill is not None,
            active_at_ms=int(active_at) if active_at is not None else None,
            summary=summary,
            rows=rows[-limit:],
        )

    @_translate_unavailable
    def append(
        self, room_id: str, row: str, dedupe_keys: list[str], now_ms: int, expected_version: int | None
    ) -> WriteResult:
        """Store a row unless a turn with one of its dedupe keys is in the window (status 0)."""
        args = [row, self.default_limit, now_ms, INDEX_REFRESH_MS, _optional(expected_version), *dedupe_keys]
        return self._write(self.append_turn_script, room_id, args, now_ms, expected_version)

    @_translate_unavailable
    def append_batch(
        self,
        room_id: str,
        turns: list[tuple[str, list[str]]],
        at_start: bool,
        now_ms: int,
        expected_version: int | None,
    ) -> WriteResult:
        """Store (row, dedupe keys) pairs in one step; details are (stored, duplicates, dropped)."""
        args = [self.default_limit, now_ms, INDEX_REFRESH_MS, _optional(expected_version)]
        args += ["start" if at_start else "end", len(turns)]
        for row, dedupe_keys in turns:
            args += [row, len(dedupe_keys), *dedupe_keys]
        return self._write(self.append_batch_script, room_id, args, now_ms, expected_version)

    @_translate_unavailable
    def replace_turn(
        self, room_id: str, read_version: int, index_from_end: int, old_row: str, new_row: str, now_ms: int
    ) -> WriteResult:
        """Compare-and-set one row; status 0 when the room or the row changed since it was read."""
        args = [read_version, index_from_end, old_row, new_row, now_ms, INDEX_REFRESH_MS, self.default_limit]
        return self._write(self.replace_turn_script, room_id, args, now_ms, None)

    @_translate_unavailable
    def compact(
        self, room_id: str, through: str, summary: str, now_ms: int, expected_version: int | None
    ) -> WriteResult:
        """Replace the turns through message `through` by the summary; status -2 when it is not in the window."""
        args = [through, rows.marker_needle(through), summary, now_ms, INDEX_REFRESH_MS]
        args += [_optional(expected_version), self.default_limit]
        return self._write(self.compact_script, room_id, args, now_ms, expected_version)

    @_translate_unavailable
    def set_limit(self, room_id: str, limit: int, now_ms: int, expected_version: int | None) -> tuple[int, bool]:
        """Returns (version, rebackfill requested)."""
        args = [limit, self.default_limit, now_ms, INDEX_REFRESH_MS, _optional(expected_version)]
        result = self._write(self.set_limit_script, room_id, args, now_ms, expected_version, window=False)
        return result.version, bool(result.details[0])

    @_translate_unavailable
    def clear(self, room_id: str, now_ms: int, expected_version: int | None) -> int:
        args = [now_ms, INDEX_REFRESH_MS, _optional(expected_version), self.default_limit]
        return self._write(self.clear_turns_script, room_id, args, now_ms, expected_version, window=False).version

    @_translate_unavailable
    def discard_rebackfill(self, room_id: str, now_ms: int, expected_version: int | None) -> int:
        args = [now_ms, INDEX_REFRESH_MS, _optional(expected_version), self.default_limit]
        script = self.discard_rebackfill_script
        return self._write(script, room_id, args, now_ms, expected_version, window=False).version

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

    def _write(
        self, script, room_id: str, args: list, now_ms: int, expected_version: int | None, window: bool = True
    ) -> WriteResult:
        """Run a room script and read the window in the same transaction; touch the activity index when due.

        The index is a hint (the reaper trusts the room's own clock), so a failed touch is logged, not
        raised: the room's write happened, and answering an error would invite a second one.
        """
        keys = self.keys(room_id)
        calls = [(script, list(keys), args)]
        if window:
            calls += [(None, keys, "window"), (None, keys, "summary")]
        try:
            reply, *after = self._transaction(calls)
        except UNAVAILABLE:  # it may have run, its index update unsent: let the next write (or retry) send it
            self._forget_index_touch(keys)
            raise
        status, version = int(reply[0]), int(reply[1])
        if status == -1:
            raise VersionMismatch(expected_version, version)
        limit, touch, details = int(reply[2]), reply[3], reply[4:]
        if touch:
            try:
                self.client.zadd(self.activity_index, {room_id: now_ms}, gt=True)
            except (redis.RedisError, redis.exceptions.RedisClusterException) as error:
                log.warning("activity index not updated for room %s: %s", room_id, error)
                self._forget_index_touch(keys)
        window_rows, summary = after if after else ([], None)
        return WriteResult(status, version, window_rows[-limit:], summary, details)

    def _forget_index_touch(self, keys: RoomKeys) -> None:
        """Best effort: with `indexed_at` gone, the room's next write asks for the index update again."""
        try:
            self.client.hdel(keys.meta, "indexed_at")
        except (redis.RedisError, redis.exceptions.RedisClusterException) as error:
            log.warning("activity index update left for a later write: %s", error)

    def _transaction(self, calls: list[tuple]) -> list:
        """Calls on one room's keys in MULTI/EXEC, replies in order; an error raised."""
        return [_raised(reply) for reply in self._send(calls, transaction=True)]

    def _pipelined(self, calls: list[tuple]) -> list:
        """Calls on many rooms (the reaper's), one pipeline, replies in order, errors in place."""
        return self._send(calls, transaction=False)

    def _send(self, calls: list[tuple], transaction: bool) -> list:
        """The one way scripts are sent: (script, keys, args) calls, or script None for the plain reads
        beside them ("window": LRANGE of the turns, "summary") or a ZADD of the activity index, in one
        round trip.

        EVALSHA directly: `script(client=pipe)` would cost a SCRIPT EXISTS round trip on every call.
        Calls answered NOSCRIPT (Redis restarted or failed over and lost its script cache) have their
        scripts loaded and are sent again, here and nowhere else; a transaction is sent again whole, so
        its reads still follow its writes.

        A cluster pipeline that is not a transaction asks its default node which arguments of an EVALSHA
        are keys; once that node is dead the question fails before the slot map is re-read, for good.
        So such calls name the node of their keys' slot themselves (a transaction finds it from the keys).
        """
        by_slot = isinstance(self.client, redis.RedisCluster) and not transaction
        replies: list = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=transaction)
            for script, keys, args in (calls[index] for index in pending):
                if script is not None:  # ClusterPipeline blocks its evalsha() method, not the command
                    route = {"target_nodes": self.client.get_node_from_key(keys[0])} if by_slot else {}
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **route)
                elif args == "window":
                    pipe.lrange(keys.turns, -self.max_rows, -1)
                elif args == "summary":
                    pipe.hget(keys.meta, "summary")
                else:
                    pipe.zadd(keys[0], args, gt=True)
            for index, reply in zip(pending, pipe.execute(raise_on_error=False), strict=True):
                replies[index] = reply
            missing = [index for index in pending if _no_script(replies[index])]
            if not missing or attempt == 2:
                return replies
            for script in {calls[index][0] for index in missing}:
                script.sha = self.client.script_load(script.script)
            pending = pending if transaction else missing
        return replies


def _no_script(reply) -> bool:
    return isinstance(reply, redis.exceptions.NoScriptError)


def _optional(version: int | None) -> str | int:
    return "" if version is None else version


def _raised(reply):
    if isinstance(reply, Exception):
        raise reply
    return reply
