-- Invariant: a cancel takes leased (processing) items too, not only pending ones
SELECT pg_temp.mutate('cancel_retry_items', 'ORDER BY a.id', 'AND a.status = ''pending'' ORDER BY a.id');
