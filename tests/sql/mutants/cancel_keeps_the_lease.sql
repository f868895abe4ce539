-- Invariant: a cancelled item's holder finds no lease (the cancel leaves a leased item in place)
SELECT pg_temp.mutate('cancel_retry_items', 'WHERE a.id = d.id', 'WHERE a.id = d.id AND a.status = ''pending''');
