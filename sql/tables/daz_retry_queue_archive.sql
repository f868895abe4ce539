-- Dead letters that cleanup removed from the queue, kept for inspection.
CREATE TABLE daz_retry_queue_archive (
    LIKE daz_retry_queue INCLUDING DEFAULTS,
    archived_at timestamptz NOT NULL DEFAULT now(),
    -- an id is archived once: the queue refuses a reused one at the door
    -- (_retryq_inserted). Should one get past it anyway (triggers disabled by
    -- a superuser), its second archive copy differs by archived_at, so that
    -- no cleanup ever fails on it.
    CONSTRAINT daz_retry_queue_archive_pkey PRIMARY KEY (id, archived_at)
);

CREATE INDEX daz_retry_queue_archive_archived_at_idx
ON daz_retry_queue_archive (archived_at);

GRANT SELECT ON daz_retry_queue_archive TO retryq_admin;

-- retryq:undo
DROP TABLE daz_retry_queue_archive;
