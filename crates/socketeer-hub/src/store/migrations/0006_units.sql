-- 6: the unit a device sends for a numeric field (`"units":{"az":"m/s²"}`), kept until it
-- sends another; NULL for fields that never had one.
ALTER TABLE series ADD COLUMN unit TEXT;
