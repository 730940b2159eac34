//! Camera records for benchmarks: N header lines, each followed by its 640×480 JPEG (about
//! 40 KB), as `socketeer publish` passes them through to a hub.
//!
//!   cargo run --release -p socketeer-scene --example frames -- 300 > frames.bin

use std::io::Write;

fn main() -> std::io::Result<()> {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for k in 0..count {
        let x = (k * 7 % 500) as f64;
        let boxes = [
            (0, [x, 100.0, 80.0, 120.0]),
            (1, [500.0 - x, 300.0, 110.0, 100.0]),
        ];
        let jpeg = socketeer_scene::jpeg(&boxes);
        writeln!(
            out,
            "{{\"stream\":\"camera\",\"detections\":[\
             {{\"label\":\"person\",\"score\":0.9,\"box\":[{x},100,80,120]}},\
             {{\"label\":\"forklift\",\"score\":0.8,\"box\":[{},300,110,100]}}],\
             \"image\":{{\"format\":\"jpeg\",\"bytes\":{}}}}}",
            500.0 - x,
            jpeg.len()
        )?;
        out.write_all(&jpeg)?;
    }
    out.flush()
}
