-- Dead letters that cleanup removed from the queue, kept for inspection.
CREATE TABLE daz_retry_queue_archive (
    LIKE daz_retry_queue INCLUDING DEFAULTS,
    archived_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT daz_retry_queue_archive_pkey PRIMARY KEY (id)
);

CREATE INDEX daz_retry_queue_archive_archived_at_idx
ON daz_retry_queue_archive (archived_at);

GRANT SELECT ON daz_retry_queue_archive TO retryq_admin;

-- retryq:undo
DROP TABLE daz_retry_queue_archive;
