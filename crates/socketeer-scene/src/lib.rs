//! The simulated robots' camera (`socketeer simulate`, `hub --demo`): a picture of a scene —
//! a wall, a floor, and each object as a box of its colour exactly where its detection box
//! says — as a 640×480 JPEG. A crate of its own so that test builds compile it optimised (an
//! encoder instantiated in an unoptimised crate runs ten times slower).

/// The picture's width, in pixels.
pub const WIDTH: usize = 640;
/// The picture's height, in pixels.
pub const HEIGHT: usize = 480;
/// Each kind of object's colour.
const COLOURS: &[[u8; 3]] = &[[230, 120, 40], [240, 200, 30], [90, 160, 220]];

thread_local! {
    /// The noise generator's state.
    static NOISE: std::cell::Cell<u64> = const { std::cell::Cell::new(0x9E37_79B9_7F4A_7C15) };
    /// The empty scene, drawn once: a wall and a floor, a little darker towards the bottom.
    static BACKGROUND: Vec<u8> = {
        let (w, h) = (WIDTH, HEIGHT);
        let mut rgb = vec![0u8; w * h * 3];
        for (y, row) in rgb.chunks_exact_mut(w * 3).enumerate() {
            let shade = |base: f64| (base - y as f64 * 0.05).clamp(0.0, 255.0) as u8;
            let colour = if y < h * 2 / 5 {
                [shade(70.0), shade(80.0), shade(95.0)]
            } else {
                [shade(55.0), shade(60.0), shade(58.0)]
            };
            for pixel in row.chunks_exact_mut(3) {
                pixel.copy_from_slice(&colour);
            }
        }
        rgb
    };
}

/// The picture of the scene with `boxes` — (kind of object, `[x, y, w, h]` in pixels) — each
/// drawn in its kind's colour with a darker rim, as a JPEG.
///
/// ```
/// let jpeg = socketeer_scene::jpeg(&[(0, [10.0, 20.0, 80.0, 120.0])]);
/// assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]));
/// ```
pub fn jpeg(boxes: &[(usize, [f64; 4])]) -> Vec<u8> {
    let (w, h) = (WIDTH, HEIGHT);
    let mut rgb = BACKGROUND.with(Clone::clone);
    // A little sensor noise, different every frame, as a real camera has (and the sizes of
    // its JPEGs, about 40 KB, with it).
    let mut seed = NOISE.with(|n| {
        let next = n
            .get()
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        n.set(next);
        next | 1
    });
    for byte in &mut rgb {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *byte = byte.saturating_add((seed % 24) as u8);
    }
    for &(object, [x, y, bw, bh]) in boxes {
        let colour = COLOURS[object % COLOURS.len()];
        let rim = colour.map(|c| c / 2);
        let (x0, y0) = (x.max(0.0) as usize, y.max(0.0) as usize);
        let (x1, y1) = (((x + bw) as usize).min(w), ((y + bh) as usize).min(h));
        for yy in y0..y1 {
            let row = &mut rgb[yy * w * 3..(yy + 1) * w * 3];
            for xx in x0..x1 {
                let edge = xx < x0 + 3 || xx + 3 >= x1 || yy < y0 + 3 || yy + 3 >= y1;
                row[xx * 3..xx * 3 + 3].copy_from_slice(if edge { &rim } else { &colour });
            }
        }
    }
    let mut jpeg = Vec::with_capacity(32 * 1024);
    // Encoding into memory cannot fail on well-sized data; an empty frame would be refused by
    // the hub, never sent wrong.
    let _ = jpeg_encoder::Encoder::new(&mut jpeg, 80).encode(
        &rgb,
        w as u16,
        h as u16,
        jpeg_encoder::ColorType::Rgb,
    );
    jpeg
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_picture_is_a_jpeg_of_the_frame_size_and_quick_to_make() {
        let boxes = [
            (0, [10.0, 10.0, 80.0, 120.0]),
            (1, [200.0, 100.0, 110.0, 100.0]),
        ];
        let started = std::time::Instant::now();
        let jpeg = super::jpeg(&boxes);
        let took = started.elapsed();
        assert!(jpeg.starts_with(&[0xff, 0xd8, 0xff]) && jpeg.ends_with(&[0xff, 0xd9]));
        // The frame header (SOF0) says 480 rows of 640.
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .expect("a frame header");
        assert_eq!(&jpeg[sof + 5..sof + 9], &[0x01, 0xe0, 0x02, 0x80]);
        eprintln!("a 640x480 picture in {took:?}, {} bytes", jpeg.len());
    }
}
