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

-- max_leases tokens per limit, each good for one lease per period: a lease
-- takes a token whose last use lies a full period back (or that was never
-- used) and stamps it with the lease time. So two uses of one token are at
-- least a period apart, and any window of one period holds at most
-- max_leases leases of the key. Tokens are taken with FOR UPDATE SKIP
-- LOCKED: concurrent acquires spread over the tokens instead of queueing on
-- one counter row.
-- One index only: every lease moves its token in the index below (a new
-- used_at), and a primary key on the slots cost each of those updates a
-- second index entry (a tenth of the time acquire spends on tokens). The
-- slots of a key stay 1..max_leases, each once: retry_rate_limit_set, their
-- only writer, adds and drops them while it holds the limit's row lock.
CREATE TABLE _retryq_rate_token (
    event_type text NOT NULL,
    plugin_name text NOT NULL,
    slot integer NOT NULL,
    used_at timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT _retryq_rate_token_limit_fkey FOREIGN KEY (event_type, plugin_name)
    REFERENCES _retryq_rate_limit (event_type, plugin_name) ON DELETE CASCADE
);

-- the tokens of a key by last use: a grant takes the longest unused, and
-- "has this key a token free?" is one index probe however many tokens it has
CREATE INDEX _retryq_rate_token_used_idx
ON _retryq_rate_token (event_type, plugin_name, used_at);

-- retryq:undo
DROP TABLE _retryq_rate_token;
DROP TABLE _retryq_rate_limit;
