"""Every SQL string of retryq_py, next to the typed rows it returns.

A method of the queue client (aio.py, and queue.py generated from it) or of
the worker names one statement; the statement names one function or view in
sql/functions/. By module:

- statements.py: the queue client's SQL templates, and Statements, composed
  for one schema;
- rows.py: the typed rows they return (class_row dataclasses) and NewItem;
- params.py: durations and filters as the statements take them;
- encode.py: JSON, and add_many's binary COPY fields;
- worker.py and ops.py: the worker's and the operators' SQL.

Everything that other modules import from `retryq_py._sql` is re-exported here.
"""

from __future__ import annotations

from retryq_py._sql.decode import UNDECODABLE, RawJson, json_text
from retryq_py._sql.encode import (
    COPY_TYPES,
    EMPTY_TEXT_ARRAY,
    JSONB_EMPTY_OBJECT,
    copy_in_types,
    dumps,
    json_default,
    jsonb_encoder,
    random_uuids,
    text_array,
    uuid_loader,
)
from retryq_py._sql.params import (
    Seconds,
    cancel_filter,
    dead_letter_filter,
    integer,
    integer_params,
    is_blank,
    name_list,
    refuse_nul_params,
    seconds,
    whole,
    whole_seconds,
)
from retryq_py._sql.rows import (
    JSON,
    CleanupResult,
    Due,
    Enqueued,
    NewItem,
    QueueEntry,
    RetryQueueItem,
    StatsRow,
    snooze_count,
)
from retryq_py._sql.statements import (
    ACQUIRE,
    CHANNEL,
    CLEANUP,
    COMPLETE,
    COMPLETE_MANY,
    COMPLETED_AT,
    COPY_IN,
    DUE,
    ENQUEUE,
    EXTEND_LOCK,
    EXTEND_LOCKS,
    FAIL,
    GET,
    GUIDE_INSERT,
    NEW_IDS,
    PURGE_DEAD_LETTERS,
    RELEASE,
    REQUEUE_DEAD_LETTERS,
    SNOOZE,
    STATS,
    TRY_CLEANUP,
    TRY_CLEANUP_LOCK,
    Statements,
    compose,
)

__all__ = [
    "ACQUIRE",
    "CHANNEL",
    "CLEANUP",
    "COMPLETE",
    "COMPLETED_AT",
    "COMPLETE_MANY",
    "COPY_IN",
    "COPY_TYPES",
    "DUE",
    "EMPTY_TEXT_ARRAY",
    "ENQUEUE",
    "EXTEND_LOCK",
    "EXTEND_LOCKS",
    "FAIL",
    "GET",
    "GUIDE_INSERT",
    "JSON",
    "JSONB_EMPTY_OBJECT",
    "NEW_IDS",
    "PURGE_DEAD_LETTERS",
    "RELEASE",
    "REQUEUE_DEAD_LETTERS",
    "SNOOZE",
    "STATS",
    "TRY_CLEANUP",
    "TRY_CLEANUP_LOCK",
    "UNDECODABLE",
    "CleanupResult",
    "Due",
    "Enqueued",
    "NewItem",
    "QueueEntry",
    "RawJson",
    "RetryQueueItem",
    "Seconds",
    "Statements",
    "StatsRow",
    "cancel_filter",
    "compose",
    "copy_in_types",
    "dead_letter_filter",
    "dumps",
    "integer",
    "integer_params",
    "is_blank",
    "json_default",
    "json_text",
    "jsonb_encoder",
    "name_list",
    "random_uuids",
    "refuse_nul_params",
    "seconds",
    "snooze_count",
    "text_array",
    "uuid_loader",
    "whole",
    "whole_seconds",
]
