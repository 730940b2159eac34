-- 4: what each numbered record said (`fingerprint`), so a number reused for a different
-- record is refused instead of acknowledged as a duplicate. NULL for rows from before:
-- those are taken as resends, as they were.
ALTER TABLE received ADD COLUMN hash INTEGER;
