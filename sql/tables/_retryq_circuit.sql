-- Settings every circuit follows unless retry_circuit_configure overrides
-- them for its key. Exactly one row.
CREATE TABLE _retryq_circuit_defaults (
    singleton boolean PRIMARY KEY DEFAULT TRUE,
    failure_threshold integer NOT NULL DEFAULT 5,
    cooldown_seconds double precision NOT NULL DEFAULT 30,
    max_cooldown_seconds double precision NOT NULL DEFAULT 1800,
    CONSTRAINT _retryq_circuit_defaults_singleton_check CHECK (singleton),
    CONSTRAINT _retryq_circuit_defaults_failure_threshold_check CHECK (
        failure_threshold BETWEEN 0 AND 1000000
    ),
    CONSTRAINT _retryq_circuit_defaults_cooldown_seconds_check CHECK (
        cooldown_seconds > 0 AND cooldown_seconds <= 31536000
    ),
    CONSTRAINT _retryq_circuit_defaults_max_cooldown_seconds_check CHECK (
        max_cooldown_seconds >= cooldown_seconds
        AND max_cooldown_seconds <= 31536000
    )
);

INSERT INTO _retryq_circuit_defaults (singleton) VALUES (TRUE);

-- One row per key that ever failed or was configured: a few rows, so that
-- acquire can afford to look at it. plugin_name '' stands for NULL (items
-- without a plugin share one circuit per event_type).
-- state: closed (items flow), open (items wait until open_until), half_open
-- (one probe item, probe_id, is out). trips counts the openings since the
-- last close and sets the next cool-down: cooldown * 2^trips, capped.
CREATE TABLE _retryq_circuit (
    event_type text NOT NULL,
    plugin_name text NOT NULL,
    state text NOT NULL DEFAULT 'closed',
    forced boolean NOT NULL DEFAULT FALSE,
    consecutive_failures integer NOT NULL DEFAULT 0,
    trips integer NOT NULL DEFAULT 0,
    open_until timestamptz,
    next_probe_at timestamptz,
    probe_id bigint,
    failure_threshold integer,
    cooldown_seconds double precision,
    max_cooldown_seconds double precision,
    opened_at timestamptz,
    closed_at timestamptz,
    last_failure_at timestamptz,
    times_opened bigint NOT NULL DEFAULT 0,
    lease_expiries bigint NOT NULL DEFAULT 0,
    CONSTRAINT _retryq_circuit_pkey PRIMARY KEY (event_type, plugin_name),
    CONSTRAINT _retryq_circuit_state_check CHECK (
        state IN ('closed', 'open', 'half_open')
    ),
    -- an open circuit reopens at open_until; a forced one has none
    CONSTRAINT _retryq_circuit_open_check CHECK (
        CASE
            WHEN state = 'open' THEN forced OR open_until IS NOT NULL
            ELSE open_until IS NULL AND NOT forced
        END
    ),
    CONSTRAINT _retryq_circuit_failure_threshold_check CHECK (
        failure_threshold BETWEEN 0 AND 1000000
    ),
    CONSTRAINT _retryq_circuit_cooldown_seconds_check CHECK (
        cooldown_seconds > 0 AND cooldown_seconds <= 31536000
    ),
    CONSTRAINT _retryq_circuit_max_cooldown_seconds_check CHECK (
        max_cooldown_seconds > 0 AND max_cooldown_seconds <= 31536000
    )
);

-- acquire asks "is any circuit not closed?" on every call: with every circuit
-- closed this partial index is empty and the answer costs one page read.
CREATE INDEX _retryq_circuit_not_closed_idx
ON _retryq_circuit (event_type, plugin_name)
WHERE state <> 'closed';

-- complete asks "does any key have a failure streak?" the same way.
CREATE INDEX _retryq_circuit_dirty_idx
ON _retryq_circuit (event_type, plugin_name)
WHERE state <> 'closed' OR consecutive_failures > 0;

-- retryq:undo
DROP TABLE _retryq_circuit;
DROP TABLE _retryq_circuit_defaults;
