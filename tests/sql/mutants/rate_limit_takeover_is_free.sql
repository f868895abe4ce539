-- Invariant: a takeover of an expired lease takes a token like any lease (it is free instead)
SELECT pg_temp.mutate('acquire_retry_items', 'WHERE NOT v_limited
                    OR l.spent', 'WHERE NOT v_limited
                    OR l.spent OR l.expired');
