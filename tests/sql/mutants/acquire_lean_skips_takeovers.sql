-- Invariant: acquire's lighter statement leaves a batch that holds an expired
-- lease to the full one (it leases the pending items around it instead)
SELECT pg_temp.mutate(
    'acquire_retry_items',
    'AND NOT EXISTS (
                            SELECT 1 FROM picked AS p
                            WHERE p.status = ''processing''
                        )',
    'AND a.status = ''pending'''
);
