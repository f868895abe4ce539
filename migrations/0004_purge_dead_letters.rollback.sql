-- Removes purge_dead_letter_items (and with it its grants).
DROP FUNCTION purge_dead_letter_items(bigint[], text, text, text, timestamptz);
