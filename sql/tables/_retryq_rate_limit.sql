-- Rate limits per key (event_type, plugin_name; '' stands for NULL, as in the
-- circuits): at most max_leases leases per period across all workers. A few
-- rows, so that acquire can afford to ask "is any limit configured?".
CREATE TABLE _retryq_rate_limit (
    event_type text NOT NULL,
    plugin_name text NOT NULL,
    max_leases integer NOT NULL,
    period interval NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- the latest last use of the tokens a lowered limit dropped: a token
    -- re-created when the limit is raised again takes it over, so that a
    -- window of one period never holds more than the larger limit
    dropped_used_at timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT _retryq_rate_limit_pkey PRIMARY KEY (event_type, plugin_name),
    CONSTRAINT _retryq_rate_limit_max_leases_check CHECK (
        max_leases BETWEEN 1 AND 100000
    ),
    CONSTRAINT _retryq_rate_limit_period_check CHECK (
        period >= interval '1 millisecond' AND period <= interval '365 days'
    )
);

-- A limit's max_leases tokens, in S = least(max_leases, 64) rows: slot i
-- holds cap tokens, the count of j in 1..max_leases with (j - 1) % 64 + 1 = i
-- (the limit dealt round-robin, so each row's cap only grows with the limit
-- and the caps sum to max_leases; up to 64 every row is one token). A row
-- counts the leases of its current use (used) and their latest time
-- (used_at); prev_used_at is the latest lease of its use before. A grant
-- takes k leases from a row in one update:
--   * a row whose used_at lies a full period back starts a new use: used = k
--     (k <= cap), prev_used_at = the old used_at;
--   * else a row with room takes them (used + k <= cap) when its prev_used_at
--     lies a full period back (so in a race a lease with an earlier clock
--     cannot join a use whose start was timed by a later one);
--   and used_at = greatest(used_at, now).
-- Why no window of one period holds more than max_leases leases of a key:
-- every lease of a use is at least a period after every lease of the uses
-- before (the new use begins only when the last one's latest lease, used_at,
-- is a period old, and each lease of it needs prev_used_at, that latest
-- lease, a period old). A window of one period, [t, t + period), therefore
-- meets at most one use of a row, and a use holds at most cap leases: the
-- rows together at most max_leases. Throughput: a row is free again one period
-- after its last lease, so at the limit a row of cap tokens loses at most
-- the time it took to fill it, about cap - 1 leases a period (1/64 of the
-- limit above 64, nothing below).
-- Writes: one row per key and grant, not one per lease, and the update is
-- HOT (no index covers the columns it changes; fillfactor leaves the room),
-- so it adds no index entry. Rows are taken with FOR UPDATE SKIP LOCKED:
-- concurrent acquires spread over the rows instead of queueing on one. The
-- slots of a key stay 1..S, each once: retry_rate_limit_set, their only
-- writer besides the grant, adds and drops them holding the limit's lock.
CREATE TABLE _retryq_rate_token (
    event_type text NOT NULL,
    plugin_name text NOT NULL,
    slot integer NOT NULL,
    used_at timestamptz NOT NULL DEFAULT '-infinity',
    cap integer NOT NULL DEFAULT 1,
    used integer NOT NULL DEFAULT 0,
    prev_used_at timestamptz NOT NULL DEFAULT '-infinity',
    -- a key's rows in slot order: a grant takes the first with room
    CONSTRAINT _retryq_rate_token_pkey PRIMARY KEY (event_type, plugin_name, slot),
    CONSTRAINT _retryq_rate_token_limit_fkey FOREIGN KEY (event_type, plugin_name)
    REFERENCES _retryq_rate_limit (event_type, plugin_name) ON DELETE CASCADE
) WITH (fillfactor = 50);

-- retryq:undo
DROP TABLE _retryq_rate_token;
DROP TABLE _retryq_rate_limit;
