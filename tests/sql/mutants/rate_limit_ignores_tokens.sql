-- Invariant: a rate-limited key gets at most N leases per period (a lease needs a token)
SELECT pg_temp.mutate('_retryq_rate_grant', 'WHERE s.event_type IS NULL OR i.rank <= s.granted', 'WHERE TRUE');
