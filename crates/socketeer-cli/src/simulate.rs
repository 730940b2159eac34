//! `socketeer simulate`: robots that stream to a hub — an IMU at `--rate`, battery and
//! temperature once a second, and a camera (`--camera-fps`, 5 by default) sending real 640×480 JPEG
//! pictures of a synthetic scene whose moving objects sit exactly where their detection boxes
//! say. For demos, dashboards and load tests; each robot reconnects on its
//! own if the link drops (what was in flight then is not resent: use `publish` for that).

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use socketeer::{Endpoint, client};
use tokio::task::JoinSet;

use crate::cli::SimulateArgs;
use crate::failure::{UsageError, hub_endpoints};
use crate::guard::client_options;

/// What the camera sees: labels, and how fast each kind moves (pixels per second).
const OBJECTS: &[(&str, f64)] = &[("person", 60.0), ("forklift", 120.0), ("pallet", 15.0)];
const FRAME: (f64, f64) = (640.0, 480.0);

/// Runs `socketeer simulate`.
pub(crate) async fn run(args: SimulateArgs) -> anyhow::Result<i32> {
    let endpoints = hub_endpoints("simulate", args.endpoint.as_deref(), &args.hubs)?;
    let shown: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    let endpoint = shown.join(", ");
    if !(args.rate > 0.0 && args.rate <= 1000.0) {
        return Err(UsageError("--rate must be above 0 and at most 1000 Hz".into()).into());
    }
    errln!(
        "socketeer: simulate: {} robots at {} Hz against {endpoint}",
        args.devices,
        args.rate
    );
    let mut robots = JoinSet::new();
    for n in 1..=args.devices {
        let name = format!("{}-{n}", args.prefix);
        let mut guard = args.guard.clone();
        if guard.key_file.is_some() {
            guard.device = Some(name.clone());
        }
        let options = client_options(&guard, args.timeout)?;
        robots.spawn(robot(
            endpoints.clone(),
            options,
            name,
            guard.key_file.is_none(),
            Pace {
                rate: args.rate,
                camera_fps: args.camera_fps,
                clock_error: args.clock_offset,
            },
            n,
        ));
    }
    let run = async {
        while let Some(done) = robots.join_next().await {
            done.context("a robot stopped")??;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        result = run => result?,
        () = async {
            match args.duration {
                Some(secs) => tokio::time::sleep(secs).await,
                None => std::future::pending().await,
            }
        } => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}

/// `count` robots named `robot-1`.. that name themselves (no keys), as `hub --demo` runs them.
/// They stream until dropped, reconnecting when the link drops.
pub(crate) fn demo_fleet(
    endpoint: &Endpoint,
    count: u32,
    rate: f64,
    camera_fps: f64,
) -> JoinSet<anyhow::Result<()>> {
    let mut robots = JoinSet::new();
    for n in 1..=count {
        robots.spawn(robot(
            vec![endpoint.clone()],
            socketeer::ClientOptions::default(),
            format!("robot-{n}"),
            true,
            Pace {
                rate,
                camera_fps,
                clock_error: 0.0,
            },
            n,
        ));
    }
    robots
}

/// How a robot sends: readings and frames per second, and how wrong its clock is.
#[derive(Debug, Clone, Copy)]
struct Pace {
    rate: f64,
    camera_fps: f64,
    /// Seconds its clock is off.
    clock_error: f64,
}

/// One robot: connects, streams, reconnects after a second when the link drops.
async fn robot(
    endpoints: Vec<Endpoint>,
    options: socketeer::ClientOptions,
    name: String,
    name_itself: bool,
    Pace {
        rate,
        camera_fps,
        clock_error,
    }: Pace,
    n: u32,
) -> anyhow::Result<()> {
    let mut world = World::new(n, 1.0 / camera_fps);
    world.clock_error = clock_error;
    let clock = move || socketeer_hub::now_secs() + clock_error;
    let session = format!("sim-{}", std::process::id());
    // Each robot starts at its own node (spread over them) and moves to the next when its
    // link drops or a node cannot be reached.
    let mut at = n as usize % endpoints.len();
    loop {
        let endpoint = &endpoints[at];
        at = (at + 1) % endpoints.len();
        match client::connect_with(endpoint, &options).await {
            Ok(conn) => {
                let (mut reader, mut writer) = conn.into_split();
                // Completed time exchanges, to send back.
                let (times, mut completed) = tokio::sync::mpsc::channel::<String>(4);
                // Answers are read and dropped (acknowledgements, or errors worth a log line);
                // a time exchange's answer is completed and sent back.
                let drain = tokio::spawn(async move {
                    while let Ok(Some(line)) = reader.read_line().await {
                        match socketeer_hub::wire::Answer::parse(&line) {
                            Ok(socketeer_hub::wire::Answer::Ack(_)) => {}
                            Ok(socketeer_hub::wire::Answer::Time { t0, t1, t2 }) => {
                                let exchange = socketeer_hub::clock::Exchange::completed(
                                    t0,
                                    t1,
                                    t2.unwrap_or(t1),
                                    clock(),
                                );
                                let _ = times.try_send(exchange.line());
                            }
                            Ok(answer) => {
                                tracing::warn!(answer = %answer.to_line().trim_end(), "hub refused a line");
                            }
                            Err(err) => tracing::warn!(%err, "hub sent something else"),
                        }
                    }
                });
                let mut hello = String::new();
                if name_itself {
                    hello.push_str(&json!({ "device": name }).to_string());
                    hello.push('\n');
                }
                hello.push_str(&json!({ "session": session }).to_string());
                hello.push('\n');
                let result: socketeer::Result<std::convert::Infallible> = async {
                    writer.write_all(hello.as_bytes()).await?;
                    // The first time exchange before any record, so that even the first is
                    // put on the hub's clock (waiting a moment at most).
                    let line = socketeer_hub::clock::request(clock());
                    writer.write_all(line.as_bytes()).await?;
                    writer.flush().await?;
                    let first =
                        tokio::time::timeout(Duration::from_secs(2), completed.recv()).await;
                    if let Ok(Some(line)) = first {
                        writer.write_all(line.as_bytes()).await?;
                    }
                    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    // A time exchange at once, then every 30 s, as `publish` runs them.
                    let every = socketeer_hub::publisher::DEFAULT_CLOCK_EVERY;
                    let mut exchange =
                        tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {
                                let bytes = world.step(1.0 / rate);
                                writer.write_all(&bytes).await?;
                            }
                            _ = exchange.tick() => {
                                let line = socketeer_hub::clock::request(clock());
                                writer.write_all(line.as_bytes()).await?;
                            }
                            Some(line) = completed.recv() => {
                                writer.write_all(line.as_bytes()).await?;
                            }
                        }
                        writer.flush().await?;
                    }
                }
                .await;
                drain.abort();
                let Err(err) = result;
                tracing::warn!(robot = %name, error = %err, "link lost; reconnecting");
            }
            Err(err) if err.kind() == socketeer::ErrorKind::Auth => {
                anyhow::bail!("simulate: {name}: {err}");
            }
            Err(err) => tracing::warn!(robot = %name, error = %err, "cannot connect; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One robot's simulated world: where it is, its battery, and what its camera sees.
struct World {
    seed: u64,
    t: f64,
    seq: u64,
    battery: f64,
    since_slow: f64,
    since_frame: f64,
    /// Seconds between camera frames.
    frame_every: f64,
    boxes: Vec<(usize, f64, f64, f64, f64)>, // (object, x, y, dx, dy)
    /// When each stream last sent its units (the hub keeps them; resent now and then for a
    /// hub that started afresh).
    units_sent: std::collections::HashMap<&'static str, f64>,
    /// Seconds this robot's clock is off (`--clock-offset`).
    clock_error: f64,
}

/// How often a stream's records carry its units, in seconds.
const UNITS_EVERY: f64 = 10.0;

impl World {
    fn new(n: u32, frame_every: f64) -> World {
        let mut world = World {
            seed: u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            t: 0.0,
            seq: 0,
            battery: 100.0 - f64::from(n % 7) * 5.0,
            since_slow: 1.0,
            since_frame: frame_every,
            frame_every,
            boxes: Vec::new(),
            units_sent: std::collections::HashMap::new(),
            clock_error: 0.0,
        };
        for i in 0..(1 + n as usize % 3) {
            let object = (n as usize + i) % OBJECTS.len();
            let (x, y) = (world.random() * 500.0, world.random() * 350.0);
            let angle = world.random() * std::f64::consts::TAU;
            let speed = OBJECTS[object].1;
            world
                .boxes
                .push((object, x, y, angle.cos() * speed, angle.sin() * speed));
        }
        world
    }

    /// xorshift64*: deterministic per robot.
    fn random(&mut self) -> f64 {
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        (self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `record` with `units` when its stream has not sent them for a while.
    fn with_units(
        &mut self,
        mut record: serde_json::Value,
        stream: &'static str,
        units: serde_json::Value,
    ) -> serde_json::Value {
        let due = self
            .units_sent
            .get(stream)
            .is_none_or(|&at| self.t - at >= UNITS_EVERY);
        if due {
            self.units_sent.insert(stream, self.t);
            record["units"] = units;
        }
        record
    }

    fn line(&mut self, mut record: serde_json::Value, out: &mut Vec<u8>) {
        self.seq += 1;
        record["seq"] = self.seq.into();
        out.extend_from_slice(record.to_string().as_bytes());
        out.push(b'\n');
    }

    /// Advances `dt` seconds and returns what to send: lines, and a camera frame's header line
    /// followed by its JPEG.
    fn step(&mut self, dt: f64) -> Vec<u8> {
        self.t += dt;
        let ts = socketeer_hub::now_secs() + self.clock_error;
        let t = self.t;
        let mut out = Vec::new();
        let noise = self.random() - 0.5;
        let imu = self.with_units(
            json!({ "stream": "imu", "ts": ts, "values": {
                "ax": (t * 1.3).sin() * 0.5 + noise * 0.05,
                "ay": (t * 0.7).cos() * 0.3 + noise * 0.05,
                "az": 9.81 + noise * 0.02,
                "gz": (t * 0.4).sin() * 0.2,
            }}),
            "imu",
            json!({ "ax": "m/s²", "ay": "m/s²", "az": "m/s²", "gz": "rad/s" }),
        );
        self.line(imu, &mut out);
        self.since_slow += dt;
        if self.since_slow >= 1.0 {
            self.since_slow = 0.0;
            self.battery = (self.battery - 0.01).max(5.0);
            let temp = 35.0 + (t / 60.0).sin() * 4.0 + self.random();
            let battery = self.with_units(
                json!({ "stream": "battery", "ts": ts, "values": {
                    "percent": self.battery, "volts": 22.0 + self.battery * 0.04,
                }}),
                "battery",
                json!({ "percent": "%", "volts": "V" }),
            );
            self.line(battery, &mut out);
            let temperature = self.with_units(
                json!({ "stream": "temperature", "ts": ts, "values": { "motor_c": temp }}),
                "temperature",
                json!({ "motor_c": "°C" }),
            );
            self.line(temperature, &mut out);
        }
        // The objects move all the time; the camera samples them at its own pace (the
        // remainder carried over, so 15 frames/s on 50 Hz ticks is 15, not 12.5).
        for b in &mut self.boxes {
            let (w, h) = (80.0 + b.0 as f64 * 30.0, 120.0 - b.0 as f64 * 20.0);
            b.1 += b.3 * dt;
            b.2 += b.4 * dt;
            if b.1 < 0.0 || b.1 + w > FRAME.0 {
                b.3 = -b.3;
                b.1 = b.1.clamp(0.0, FRAME.0 - w);
            }
            if b.2 < 0.0 || b.2 + h > FRAME.1 {
                b.4 = -b.4;
                b.2 = b.2.clamp(0.0, FRAME.1 - h);
            }
        }
        self.since_frame += dt;
        if self.since_frame >= self.frame_every {
            self.since_frame = (self.since_frame - self.frame_every).min(self.frame_every);
            let detections: Vec<(&str, f64, f64, f64, f64)> = self
                .boxes
                .iter()
                .map(|b| {
                    let (w, h) = (80.0 + b.0 as f64 * 30.0, 120.0 - b.0 as f64 * 20.0);
                    (OBJECTS[b.0].0, b.1, b.2, w, h)
                })
                .collect();
            // Boxes as sent (whole pixels), and the picture drawn from exactly those.
            let boxes: Vec<(usize, [f64; 4])> = self
                .boxes
                .iter()
                .zip(&detections)
                .map(|(b, &(_, x, y, w, h))| (b.0, [x.round(), y.round(), w, h]))
                .collect();
            let detections: Vec<serde_json::Value> = detections
                .into_iter()
                .zip(&boxes)
                .map(|((label, ..), (_, bbox))| {
                    let score = 0.6 + self.random() * 0.39;
                    json!({ "label": label, "score": (score * 100.0).round() / 100.0,
                            "box": bbox })
                })
                .collect();
            let jpeg = socketeer_scene::jpeg(&boxes);
            self.line(
                json!({ "stream": "camera", "ts": ts,
                        "frame": { "w": FRAME.0 as u32, "h": FRAME.1 as u32 },
                        "detections": detections,
                        "image": { "format": "jpeg", "bytes": jpeg.len() } }),
                &mut out,
            );
            out.extend_from_slice(&jpeg);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketeer_hub::record::{Line, parse_line};

    #[test]
    fn every_simulated_line_is_one_the_hub_accepts() {
        let mut world = World::new(3, 0.2);
        let mut kinds = std::collections::BTreeSet::new();
        let mut with_units = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let bytes = world.step(0.02);
            let mut rest = &bytes[..];
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                let line = std::str::from_utf8(&rest[..end]).expect("text");
                rest = &rest[end + 1..];
                match parse_line(line) {
                    Ok(Line::Image {
                        mut record,
                        format,
                        len,
                    }) => {
                        let (image, after) = rest.split_at(len as usize);
                        rest = after;
                        socketeer_hub::record::attach_image(
                            &mut record,
                            format,
                            bytes::Bytes::copy_from_slice(image),
                        )
                        .expect("a real JPEG");
                        kinds.insert(record.stream.clone());
                        let frame = record.frame.expect("a frame");
                        assert_eq!((frame.width, frame.height), (640, 480));
                        for d in frame.detections {
                            assert!(d.bbox[0] >= 0.0 && d.bbox[0] + d.bbox[2] <= 640.0);
                            assert!(d.bbox[1] >= 0.0 && d.bbox[1] + d.bbox[3] <= 480.0);
                        }
                    }
                    Ok(Line::Record(record)) => {
                        kinds.insert(record.stream.clone());
                        if !record.units.is_empty() {
                            with_units.insert(record.stream.clone());
                        }
                        if let Some(frame) = record.frame {
                            for d in frame.detections {
                                assert!(d.bbox[0] >= 0.0 && d.bbox[0] + d.bbox[2] <= 640.0);
                                assert!(d.bbox[1] >= 0.0 && d.bbox[1] + d.bbox[3] <= 480.0);
                            }
                        }
                    }
                    other => panic!("{line}: {other:?}"),
                }
            }
        }
        let expected = ["battery", "camera", "imu", "temperature"];
        assert_eq!(kinds.into_iter().collect::<Vec<_>>(), expected);
        let expected = ["battery", "imu", "temperature"];
        assert_eq!(with_units.into_iter().collect::<Vec<_>>(), expected);
    }
}
