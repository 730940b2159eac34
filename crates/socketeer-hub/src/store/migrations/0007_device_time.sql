-- 7: one clock for the fleet. `ts` is a record's time on the hub's clock (its own time
-- corrected by its device's clock offset, from the time exchanges on its link); `device_ts`
-- keeps the time as the device sent it, where the two differ (NULL: the same).
ALTER TABLE samples ADD COLUMN device_ts REAL;
ALTER TABLE frames ADD COLUMN device_ts REAL;
