"""What the queue clients share, with no I/O: add()'s defaults and keywords,
item building, and add_many's COPY rows.

AsyncRetryQueue (aio.py) is the hand-written client; RetryQueue (queue.py) is
generated from it by scripts/gen-sync. Both subclass QueueBase, so what is
here is written once and runs the same for both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg import errors as pgerr
from psycopg.types.json import Jsonb

from retryq_py import _sql
from retryq_py._sql import JSON, NewItem, Seconds
from retryq_py._sql.decode import UNDECODABLE

if TYPE_CHECKING:
    from retryq_py.config import RetryConfig


# add()'s keywords, which add_many's mapping items (and `retryq enqueue`'s
# JSON lines) use: the order of _rows' unpacking.
ADD_KEYS = (
    "event_type",
    "data",
    "channel",
    "plugin",
    "metadata",
    "max_retries",
    "retry_delay",
    "backoff_multiplier",
    "priority",
    "correlation_id",
    "tags",
    "delay",
    "max_retry_delay",
    "retry_jitter",
    "dedupe_key",
)
_KEYS = frozenset(ADD_KEYS)
_ABSENT = dict.fromkeys(ADD_KEYS)
_of_new_item = attrgetter(*ADD_KEYS)
_of_mapping = itemgetter(*ADD_KEYS)
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1
# enqueue_retry_items' bound on delay_seconds (the table has no delay column to check)
_MAX_DELAY = 31536000


# The fields that go to text or jsonb columns: neither can hold U+0000.
_TEXT_KEYS = ("event_type", "channel", "plugin", "correlation_id", "dedupe_key")
_JSON_KEYS = ("data", "metadata")
# The number fields that take a float (a keyed batch sends them as JSON).
_FLOAT_KEYS = ("retry_delay", "backoff_multiplier", "delay", "max_retry_delay", "retry_jitter")


def _json_path(value: Any, path: str, bad: Callable[[Any], bool], keys: bool) -> str | None:
    """Where in a JSON value a leaf (or, with `keys`, a mapping's key) is
    `bad`, as a path, or None."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if keys and bad(key):
                return f"{path} (key {key!r})"
            found = _json_path(inner, f"{path}[{key!r}]", bad, keys)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for n, inner in enumerate(value):
            found = _json_path(inner, f"{path}[{n}]", bad, keys)
            if found:
                return found
    elif bad(value):
        return path
    return None


def _has_nul(value: Any) -> bool:
    return isinstance(value, str) and "\x00" in value


def _not_finite(value: Any) -> bool:
    """NaN or an infinity: Python's json writes them, jsonb refuses them."""
    return isinstance(value, float) and not math.isfinite(value)


def _nul_path(value: Any, path: str) -> str | None:
    """Where U+0000 sits in a JSON value (a key or a string), as a path, or None."""
    return _json_path(value, path, _has_nul, keys=True)


def _not_json_path(value: Any, path: str) -> str | None:
    """Where a float JSON cannot hold (NaN, Infinity) sits in a JSON value,
    as a path, or None."""
    return _json_path(value, path, _not_finite, keys=False)


def refuse_nul(
    items: Sequence[NewItem | Mapping[str, Any]], single: bool, keyed: bool = False
) -> None:
    """Raise, naming the item and field, if an item holds U+0000 (NUL).

    NaN and the infinities in a JSON field are refused the same way
    (InvalidTextRepresentation, 22P02, naming the path), and, for a keyed
    batch (`keyed`: sent as JSON), in a number field too.

    Called only after psycopg or the server refused a call with a DataError:
    NUL fails there unnamed ("text fields cannot contain NUL", or jsonb's
    22P05 "unsupported Unicode escape sequence"), so the common path pays
    nothing for the check. A text field raises CharacterNotInRepertoire
    (22021, as PostgreSQL refuses a NUL byte), a JSON field
    UntranslatableCharacter (22P05, as jsonb refuses \\u0000). Returns when
    no item holds one: the caller re-raises what it caught.
    """
    for n, item in enumerate(items):
        get = item.get if isinstance(item, Mapping) else lambda k, i=item: getattr(i, k, None)
        where = "" if single else f"item {n}: "
        for key in _TEXT_KEYS:
            value = get(key)
            if isinstance(value, str) and "\x00" in value:
                raise pgerr.CharacterNotInRepertoire(
                    f"retryq: {where}invalid {key}: contains U+0000 (NUL), "
                    "which PostgreSQL cannot store in text"
                )
        tags = get("tags")
        if isinstance(tags, Sequence) and not isinstance(tags, str):
            for t, tag in enumerate(tags):
                if isinstance(tag, str) and "\x00" in tag:
                    raise pgerr.CharacterNotInRepertoire(
                        f"retryq: {where}invalid tags: tags[{t}] contains U+0000 (NUL), "
                        "which PostgreSQL cannot store in text"
                    )
        for key in _JSON_KEYS:
            found = _nul_path(get(key), key)
            if found:
                raise pgerr.UntranslatableCharacter(
                    f"retryq: {where}invalid {key}: {found} contains U+0000 (NUL), "
                    "which PostgreSQL cannot store in jsonb"
                )
            found = _not_json_path(get(key), key)
            if found:
                # 22P02, as jsonb refuses the token
                raise pgerr.InvalidTextRepresentation(
                    f"retryq: {where}invalid {key}: {found} is NaN or an infinity, "
                    "which JSON (and jsonb) cannot hold"
                )
        for key in _FLOAT_KEYS if keyed else ():
            value = get(key)
            if _not_finite(value):
                raise pgerr.InvalidTextRepresentation(
                    f"retryq: {where}invalid {key}: {value} is NaN or an infinity, "
                    "which JSON (and jsonb) cannot hold"
                )


def undecodable_failure(
    item: _sql.RetryQueueItem, worker_id: str, why: str, now: datetime | None
) -> dict[str, Any]:
    """_sql.FAIL's parameters failing a leased item Python cannot decode
    for good (_sql.decode.UNDECODABLE), fenced to its lease."""
    return {
        "item_id": item.id,
        "worker_id": worker_id,
        "error": f"retryq: acquire {why}"[:4000],
        "code": UNDECODABLE,
        "retryable": False,
        "retry_after": None,
        "now": now,
        "leased_at": item.leased_at,
    }


def jsonb_param(value: Any) -> Jsonb:
    """A jsonb parameter, encoded by _sql.dumps (which stores the usual
    non-JSON Python values too)."""
    return Jsonb(value, dumps=_sql.dumps)


class QueueBase:
    """What RetryQueue and AsyncRetryQueue share: defaults and item building."""

    def __init__(self, *, schema: str | None, config: RetryConfig | None) -> None:
        self.schema = schema
        self._q = _sql.Statements(schema)
        self.max_retries = config.max_retries if config else 3
        self.retry_delay: float = config.initial_delay if config else 60.0
        self.backoff_multiplier = config.backoff_multiplier if config else 2.0

    def item(
        self,
        event_type: str,
        data: JSON,
        *,
        channel: str | None = None,
        plugin: str | None = None,
        metadata: Mapping[str, JSON] | None = None,
        max_retries: int | None = None,
        retry_delay: Seconds | None = None,
        backoff_multiplier: float | None = None,
        priority: int = 5,
        correlation_id: str | None = None,
        tags: Sequence[str] | None = None,
        delay: Seconds = 0,
        max_retry_delay: Seconds = 86400,
        retry_jitter: float = 0.0,
        dedupe_key: str | None = None,
    ) -> NewItem:
        """A NewItem with this queue's defaults, for add_many."""
        return NewItem(
            event_type=event_type,
            data=data,
            channel=channel,
            plugin=plugin,
            metadata=metadata,
            max_retries=self.max_retries if max_retries is None else max_retries,
            retry_delay=self.retry_delay if retry_delay is None else retry_delay,
            backoff_multiplier=(
                self.backoff_multiplier if backoff_multiplier is None else backoff_multiplier
            ),
            priority=priority,
            correlation_id=correlation_id,
            tags=tags,
            delay=delay,
            max_retry_delay=max_retry_delay,
            retry_jitter=retry_jitter,
            dedupe_key=dedupe_key,
        )

    def _enqueue_params(self, new: NewItem, now: datetime | None) -> dict[str, Any]:
        """add()'s parameters for _sql.ENQUEUE."""
        _check_fields(new)
        params = _typed(new.params())
        params["event_data"] = jsonb_param(params["event_data"])
        params["event_metadata"] = jsonb_param(params["event_metadata"])
        params["now"] = now
        return params

    def _keyed_batch(self, items: Sequence[NewItem | Mapping[str, Any]]) -> Jsonb | None:
        """_sql.ENQUEUE_MANY's items when an item has a dedupe key (the rule
        lives in enqueue_retry_items), else None (the COPY path). Items are
        checked as _rows checks them: unknown or missing keys. Each is
        encoded here, so that a value JSON cannot store names its item."""
        if not any(_dedupe_key_of(i) is not None for i in items):
            return None
        batch = []
        for n, item in enumerate(items):
            with _at_item(n):
                batch.append(_sql.dumps(self._keyed_item(item)))
        return Jsonb(f"[{','.join(batch)}]", dumps=_as_is)

    def _keyed_item(self, item: NewItem | Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(item, NewItem):
            _check_item(item)
            if not item.keys() <= _KEYS:
                raise _unknown_key(item)
            given = {k: v for k, v in item.items() if v is not None}
            for required in ("event_type", "data"):
                if required not in given:
                    raise ValueError(f"add_many: every item needs {required!r}")
            item = self.item(**given)
        _check_fields(item)
        return _typed(item.params())

    def _new_ids(self, count: int, now: datetime | None) -> dict[str, Any]:
        """add_many's first step's parameters (_sql.NEW_IDS)."""
        return {"sequence": self._q.sequence, "n": count, "now": now}

    def _last_id(self) -> dict[str, Any]:
        """add_many's third step's parameters (_sql.LAST_ID)."""
        return {"sequence": self._q.sequence}

    def _rows(
        self,
        items: Sequence[NewItem | Mapping[str, Any]],
        now: datetime,
        encoding: str,
        event_ids: list[UUID],
    ) -> Iterator[tuple[Any, ...]]:
        """_copy_rows, an error naming the item it is about (its index: the
        rows made before it, one event id each)."""
        try:
            yield from self._copy_rows(items, now, encoding, event_ids)
        except (TypeError, ValueError, pgerr.Error) as exc:
            named = _named(exc, len(event_ids))
            if named is exc:
                raise
            raise named from exc

    def _copy_rows(
        self,
        items: Sequence[NewItem | Mapping[str, Any]],
        now: datetime,
        encoding: str,
        event_ids: list[UUID],
    ) -> Iterator[tuple[Any, ...]]:
        """add_many's COPY rows (_sql.COPY_IN's columns), one per item, with
        what enqueue_retry_items would store: the same defaults (this queue's
        where it has its own), created_at now, next_retry_at now + delay, and a
        new random event_id, appended to event_ids (the id comes from the
        server, see new_ids).

        Items are checked here, before their row is sent: a missing or unknown
        key (ValueError, TypeError), a delay out of range (InvalidParameterValue
        naming delay_seconds, as enqueue_retry_items raises it) and a value of
        the wrong type (TypeError naming the field; binary COPY would turn a
        bool or an int beyond 32 bits into another number); the table's
        constraints judge the rest on the server. This is the bulk path,
        measured in scripts/bench_add_many.py: values go straight from the item
        to the row, with a fast path for values of the expected type.
        """
        max_retries_default = self.max_retries
        retry_delay_default = _sql.seconds(self.retry_delay, "retry_delay")
        backoff_default = self.backoff_multiplier
        # next_retry_at is an instant: add the delay in UTC, not in a local zone
        # whose clocks may change within it (timestamptz + interval in seconds)
        now = now.astimezone(timezone.utc)
        tags_seen: dict[tuple[Any, ...], bytes] = {}
        jsonb = _sql.jsonb_encoder()
        uuids = _sql.random_uuids(len(items))
        load_uuid = _sql.uuid_loader()
        no_tags, no_metadata = _sql.EMPTY_TEXT_ARRAY, _sql.JSONB_EMPTY_OBJECT
        for item, at in zip(items, range(0, 16 * len(items), 16), strict=True):
            if isinstance(item, NewItem):
                values = _of_new_item(item)
            else:
                if type(item) is not dict:
                    _check_item(item)
                if not item.keys() <= _KEYS:
                    raise _unknown_key(item)
                values = _of_mapping({**_ABSENT, **item})
                if values[0] is None or values[1] is None:
                    for required in ("event_type", "data"):
                        if required not in item:
                            raise ValueError(f"add_many: every item needs {required!r}")
            (
                event_type,
                data,
                channel,
                plugin,
                metadata,
                max_retries,
                retry_delay,
                backoff_multiplier,
                priority,
                correlation_id,
                tags,
                delay,
                max_retry_delay,
                retry_jitter,
                _,  # dedupe_key: None here (see _keyed_batch)
            ) = values
            # absent and None take the default, as in add(); the full check
            # only for a value not of the expected type
            if type(event_type) is not str and event_type is not None:
                event_type = _text(event_type, "event_type")
            if type(channel) is not str and channel is not None:
                channel = _text(channel, "channel")
            if type(plugin) is not str and plugin is not None:
                plugin = _text(plugin, "plugin")
            if type(correlation_id) is not str and correlation_id is not None:
                correlation_id = _text(correlation_id, "correlation_id")
            if max_retries is None:
                max_retries = max_retries_default
            elif type(max_retries) is not int or not _INT4_MIN <= max_retries <= _INT4_MAX:
                max_retries = _int4(max_retries, "max_retries")
            if priority is None:
                priority = 5
            elif type(priority) is not int or not _INT4_MIN <= priority <= _INT4_MAX:
                priority = _int4(priority, "priority")
            if retry_delay is None:
                retry_delay = retry_delay_default
            elif type(retry_delay) is not float:
                retry_delay = _sql.seconds(retry_delay, "retry_delay")
            if max_retry_delay is None:
                max_retry_delay = 86400.0
            elif type(max_retry_delay) is not float:
                max_retry_delay = _sql.seconds(max_retry_delay, "max_retry_delay")
            if backoff_multiplier is None:
                backoff_multiplier = backoff_default
            elif type(backoff_multiplier) is not float:
                backoff_multiplier = _number(backoff_multiplier, "backoff_multiplier")
            if retry_jitter is None:
                retry_jitter = 0.0
            elif type(retry_jitter) is not float:
                retry_jitter = _number(retry_jitter, "retry_jitter")
            if delay is None:
                due = now
            else:
                seconds = delay if type(delay) is float else _sql.seconds(delay, "delay")
                if not 0 <= seconds <= _MAX_DELAY:  # NaN too
                    raise pgerr.InvalidParameterValue(
                        f"retryq: invalid delay_seconds: must be between 0 and {_MAX_DELAY}"
                    )
                # make_interval(secs => s) rounds s * 1e6 to whole microseconds, half to even
                due = now + timedelta(microseconds=round(seconds * 1_000_000)) if seconds else now
            if tags is None:
                tag_array = no_tags
            elif isinstance(tags, str | bytes):
                raise _not_tags(tags)
            else:
                tag_key = tags if type(tags) is tuple else tuple(tags)
                try:
                    tag_array = tags_seen[tag_key]
                except KeyError:
                    tag_array = tags_seen[tag_key] = _sql.text_array(tag_key, encoding)
                except TypeError:  # unhashable: not a string
                    tag_array = _sql.text_array(tag_key, encoding)
            event_id = uuids[at : at + 16]
            row = (
                event_id,
                event_type,
                channel,
                plugin,
                None if data is None else jsonb(data),  # NULL: the NOT NULL error, as before
                no_metadata
                if metadata is None
                else jsonb(metadata if type(metadata) is dict else _mapping(metadata)),
                max_retries,
                retry_delay,
                backoff_multiplier,
                max_retry_delay,
                retry_jitter,
                priority,
                correlation_id,
                tag_array,
                now,
                due,
            )
            # after the row is made: _rows names a failing item by this count
            event_ids.append(load_uuid(event_id))
            yield row


def clock_and_mark(row: Any) -> tuple[datetime, int | None]:
    """NEW_IDS' one row: the clock and the mark in the id sequence."""
    clock, mark = row
    return clock, mark


def new_ids(mark: int | None, last: int, count: int) -> list[int] | None:
    """The ids of add_many's count rows when this backend drew nothing else
    and no other backend drew between the mark and the last id: the count
    numbers after the mark (its nextvals ascend, so count distinct ids in
    count places are all of them, in input order). None otherwise (look them
    up by event id: _sql.NEW_IDS_OF)."""
    if mark is not None and last - mark == count:
        return list(range(mark + 1, last + 1))
    return None


def found_ids(ids: list[int], count: int) -> list[int]:
    """_sql.NEW_IDS_OF's ids, which must be one per row."""
    if len(ids) != count:
        raise RuntimeError(f"add_many: found {len(ids)} ids for {count} new rows")
    return ids


def at_item(exc: psycopg.Error, n: int) -> psycopg.Error:
    """exc, its message naming add_many's item n; its diag (SQLSTATE,
    column, constraint) is the server's, as it was."""
    exc.args = (f"retryq: item {n}: {str(exc.args[0]).removeprefix('retryq: ')}", *exc.args[1:])
    return exc


def unnamed_refusal(exc: Exception) -> bool:
    """Whether exc refuses a value (SQLSTATE class 22, 23 or 54) without
    naming add_many's item ('retryq: item N: ', as enqueue_retry_items and
    _named write it)."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ("22", "23", "54") and _NAMED_ITEM.match(str(exc)) is None


_NAMED_ITEM = re.compile(r"(retryq|add_many): item \d+: ")


def _as_is(encoded: str) -> str:
    return encoded


def _dedupe_key_of(item: Any) -> Any:
    if isinstance(item, NewItem):
        return item.dedupe_key
    return item.get("dedupe_key") if isinstance(item, Mapping) else None


def _check_item(item: Any) -> None:
    if not isinstance(item, Mapping):
        raise TypeError(f"expected a NewItem or a mapping of add()'s keywords, got {item!r}")


def _unknown_key(item: Mapping[str, Any]) -> TypeError:
    unknown = next(k for k in item if k not in _KEYS)
    return TypeError(f"add_many: unknown item key {unknown!r}")


def _not_tags(tags: Any) -> TypeError:
    # a str is a sequence of strings, each of one character: {a,b,c}
    return TypeError(f"tags: expected a list of strings, got {type(tags).__name__} {tags!r}")


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"metadata: expected a mapping (a dict), got {value!r}")
    return dict(value)


def _check_fields(new: NewItem) -> None:
    """add()'s and a keyed add_many's fields of the wrong type, refused naming
    the field, as the COPY path (_copy_rows) refuses them: PostgreSQL would
    find no function for an int where text goes (42883), and psycopg would
    store a str's characters as tags or fail to make a dict of a list."""
    for field in ("event_type", "channel", "plugin", "correlation_id", "dedupe_key"):
        value = getattr(new, field)
        if value is not None and type(value) is not str:
            _text(value, field)
    if new.metadata is not None and not isinstance(new.metadata, Mapping):
        _mapping(new.metadata)
    tags = new.tags
    if tags is not None:
        if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
            raise _not_tags(tags)
        for t, tag in enumerate(tags):
            if not isinstance(tag, str):
                raise TypeError(f"tags: tags[{t}] is not a string: {tag!r}")


@contextmanager
def _at_item(n: int) -> Iterator[None]:
    """An error raised within names add_many's item n."""
    try:
        yield
    except (TypeError, ValueError, pgerr.Error) as exc:
        named = _named(exc, n)
        if named is exc:
            raise
        raise named from exc


def _named(exc: Exception, n: int) -> Exception:
    """exc, of the same type, its message naming add_many's item n."""
    text = str(exc)
    for prefix in ("add_many: ", "retryq: "):
        text = text.removeprefix(prefix)
    if text.startswith("item "):  # named already (refuse_nul)
        return exc
    prefix = "retryq: " if isinstance(exc, pgerr.Error) else "add_many: "
    try:
        return type(exc)(f"{prefix}item {n}: {text}")
    except Exception:  # a type that takes other arguments: as it was
        return exc


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a string, got {value!r}")
    return value


# The rules of the integer columns, as the SQL states them when it refuses.
_INT4_RULES = {"max_retries": "between 0 and 1000", "priority": "between 1 and 10"}


def _int4(value: Any, field: str) -> int:
    """An integer column's value. Binary COPY would send a bool as 0 or 1 and
    keep only the low 32 bits of a larger int: refuse both. A float with no
    fraction (5.0, as json.loads reads "5.0") is that integer, as
    enqueue_retry_items takes the JSON number 5.0 (_sql.whole); a string is
    not a number."""
    number = _sql.integer(value, field)
    if not _INT4_MIN <= number <= _INT4_MAX:
        raise pgerr.NumericValueOutOfRange(
            f"retryq: invalid {field}: {number} is out of range"
            f" (must be {_INT4_RULES.get(field, 'an integer')})"
        )
    return number


def _typed(params: dict[str, Any]) -> dict[str, Any]:
    """add()'s and a keyed batch's numbers held to the COPY path's rules
    (_rows), so that one item gets one answer on every path: otherwise
    PostgreSQL would take the string "5" for add's priority, and 5.0 would
    find no function (42883)."""
    for key in ("max_retries", "priority"):
        value = params[key]
        if value is not None and (type(value) is not int or not _INT4_MIN <= value <= _INT4_MAX):
            params[key] = _int4(value, key)
    for key in ("backoff_multiplier", "retry_jitter"):
        value = params[key]
        if value is not None and type(value) is not float:
            params[key] = _number(value, key)
    return params


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field}: expected a number, got {value!r}")
    return float(value)
