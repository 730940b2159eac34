-- 1: devices, series of numbers, frames with detections, idempotency keys by session.
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    stream TEXT NOT NULL,
    field TEXT NOT NULL,
    UNIQUE (device_id, stream, field)
);
CREATE TABLE points (
    series_id INTEGER NOT NULL,
    ts REAL NOT NULL,
    recv_ts REAL NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX points_by_series_time ON points (series_id, ts);
CREATE TABLE frames (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    stream TEXT NOT NULL,
    ts REAL NOT NULL,
    recv_ts REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL
);
CREATE INDEX frames_by_device_time ON frames (device_id, ts);
CREATE TABLE detections (
    frame_id INTEGER NOT NULL REFERENCES frames(id),
    label TEXT NOT NULL,
    score REAL NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, w REAL NOT NULL, h REAL NOT NULL
);
CREATE INDEX detections_by_frame ON detections (frame_id);
CREATE INDEX detections_by_label ON detections (label, frame_id);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    name TEXT NOT NULL,
    last_recv REAL NOT NULL,
    UNIQUE (device_id, name)
);
CREATE INDEX sessions_by_last_recv ON sessions (last_recv);
CREATE TABLE received (
    session_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
