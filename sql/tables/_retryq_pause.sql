-- Operators' pauses (retry_queue_pause): items of a paused key are not leased
-- until retry_queue_resume. A few rows at most, usually none, so that acquire
-- can afford one look at it on every call. '' stands for "every": event_type
-- '' pauses every event type (of plugin_name, or the whole queue), and
-- plugin_name '' every plugin of the event type, items without a plugin
-- included. (event_type is never blank in the queue, so '' cannot clash.)
-- Unlike a circuit's forced open state, a pause is no failure streak: it is
-- kept apart, and closing a circuit never resumes a pause.
CREATE TABLE _retryq_pause (
    event_type text NOT NULL,
    plugin_name text NOT NULL,
    paused_at timestamptz NOT NULL,
    paused_by text NOT NULL,
    reason text,
    CONSTRAINT _retryq_pause_pkey PRIMARY KEY (event_type, plugin_name)
);

-- retryq:undo
DROP TABLE _retryq_pause;
