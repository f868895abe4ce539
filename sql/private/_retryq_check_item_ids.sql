-- Raises 22023 invalid_parameter_value naming item_ids when the id array has
-- a second dimension (= ANY would take it flat: cancel_retry_items('{{1},{2}}')
-- cancelled both) or a NULL element (a caller's bug that = ANY would skip).
-- Callers call it only when either holds, so the usual call runs nothing; the
-- dimension first, since array_position raises 0A000 on a multidimensional
-- array.
CREATE OR REPLACE FUNCTION _retryq_check_item_ids(p_item_ids bigint[])
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM _retryq_check(
        coalesce(pg_catalog.array_ndims(p_item_ids), 1) = 1,
        'item_ids', 'must be a one-dimensional array'
    );
    PERFORM _retryq_check(
        pg_catalog.array_position(p_item_ids, NULL) IS NULL,
        'item_ids', 'must not hold NULL'
    );
END;
$$;

REVOKE EXECUTE ON FUNCTION _retryq_check_item_ids FROM public;
