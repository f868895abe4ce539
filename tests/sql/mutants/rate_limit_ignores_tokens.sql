-- Invariant: a rate-limited key gets at most N leases per period (a lease needs a token)
SELECT pg_temp.mutate('_retryq_rate_grant', 'v_granted := v_granted || v_k.ids[1:v_taken];', 'v_granted := v_granted || v_k.ids;');
