-- Invariant: a buried dead lease does not use up the batch (the bug the model found)
SELECT pg_temp.mutate('acquire_retry_items', 'current_setting(''retryq.buried'', TRUE) = ''yes''', 'FALSE');
