-- Invariant: acquire hands out the most urgent first (priority ascending instead)
SELECT pg_temp.mutate('acquire_retry_items', 'v_priority := 10;', 'v_priority := 1;');
SELECT pg_temp.mutate('acquire_retry_items', 'WHILE v_priority >= 1', 'WHILE v_priority <= 10');
SELECT pg_temp.mutate('acquire_retry_items', 'v_priority := v_priority - 1;', 'v_priority := v_priority + 1;');
SELECT pg_temp.mutate('acquire_retry_items', 'WHERE a.priority <= v_priority', 'WHERE a.priority >= v_priority');
SELECT pg_temp.mutate('acquire_retry_items', 'ORDER BY a.priority DESC', 'ORDER BY a.priority');
