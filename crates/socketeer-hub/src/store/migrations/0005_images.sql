-- 5: camera images, one per frame that came with one (its size and detections are in
-- `frames` and `detections` as for any frame). Kept apart so that their own retention and
-- byte budget can delete them without touching the frames' detections or any reading.
CREATE TABLE images (
    frame_id INTEGER PRIMARY KEY REFERENCES frames(id),
    format TEXT NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX frames_by_stream_time ON frames (device_id, stream, ts);
CREATE INDEX frames_by_recv ON frames (recv_ts);
