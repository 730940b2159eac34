-- 3: text states (`"mode":"RTK"`): kept in `samples.vals` as JSON strings beside the
-- numbers; their fields are listed here, not in `series` (which stays numbers only).
CREATE TABLE text_fields (
    device_id INTEGER NOT NULL REFERENCES devices(id),
    stream TEXT NOT NULL,
    field TEXT NOT NULL,
    UNIQUE (device_id, stream, field)
);
