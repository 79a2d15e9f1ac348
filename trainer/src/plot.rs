//! `training_loss.png`: the logged training loss against the step, raw and smoothed, drawn into an
//! RGB buffer with a built-in 5×7 bitmap font and encoded with the `png` crate (no font files, no
//! plotting crates).
//!
//! The look follows LLaMA-Factory's `plot_loss`: the raw curve in `#1f77b4` at 40 % opacity over
//! white (drawn opaque as its blend, `#a5c9e1`), the smoothed curve in `#1f77b4`, a legend
//! "original" / "smoothed", x label "step", y label "loss". The smoothing is LLaMA-Factory's
//! `smooth()` ([`smooth_llamafactory`]): a TensorBoard-style EMA whose weight grows with the number
//! of points. Non-finite losses are left out of both curves.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Image width in pixels.
pub const WIDTH: u32 = 800;
/// Image height in pixels.
pub const HEIGHT: u32 = 500;
/// Colour of the raw loss curve (`#1f77b4` at alpha 0.4 over white).
pub const RAW_COLOR: [u8; 3] = [0xa5, 0xc9, 0xe1];
/// Colour of the smoothed loss curve (`#1f77b4`).
pub const SMOOTH_COLOR: [u8; 3] = [0x1f, 0x77, 0xb4];

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [30, 30, 30];
const GRID: [u8; 3] = [228, 228, 228];
const LEGEND_BORDER: [u8; 3] = [200, 200, 200];

// Plot area (pixels, inclusive left/top, exclusive right/bottom).
const LEFT: i64 = 90;
const RIGHT: i64 = WIDTH as i64 - 30;
const TOP: i64 = 60;
const BOTTOM: i64 = HEIGHT as i64 - 60;

/// Failure to write the picture.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The file could not be created.
    #[error("cannot create loss plot {path}: {source}")]
    Io {
        /// The target file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// PNG encoding or writing failed.
    #[error("cannot write PNG {path}: {source}")]
    Encode {
        /// The target file.
        path: PathBuf,
        /// The underlying error.
        source: png::EncodingError,
    },
}

/// An 8-bit RGB picture, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

impl RgbImage {
    fn new(width: u32, height: u32, fill: [u8; 3]) -> Self {
        let pixels = fill
            .iter()
            .copied()
            .cycle()
            .take(width as usize * height as usize * 3)
            .collect();
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    /// The colour at (x, y); `None` outside the picture.
    pub fn get(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        (x < self.width && y < self.height).then(|| {
            let i = (y as usize * self.width as usize + x as usize) * 3;
            [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
        })
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && x < self.width as i64 && y < self.height as i64 {
            let i = (y as usize * self.width as usize + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.put(x, y, c);
            }
        }
    }
}

/// LLaMA-Factory's `smooth`: EMA with `weight = 1.8 · (sigmoid(0.05 · n) − 0.5)`, started at the
/// first value.
pub fn smooth_llamafactory(values: &[f64]) -> Vec<f64> {
    let Some(&first) = values.first() else {
        return Vec::new();
    };
    let weight = 1.8 * (1.0 / (1.0 + (-0.05 * values.len() as f64).exp()) - 0.5);
    let mut last = first;
    values
        .iter()
        .map(|&v| {
            last = last * weight + (1.0 - weight) * v;
            last
        })
        .collect()
}

/// Write `training_loss.png` (800×500 RGB) for `(step, loss)` points to `path`. Zero points give
/// empty axes marked "no data"; one point is drawn as a marker.
pub fn write_loss_plot(path: &Path, points: &[(u64, f64)]) -> Result<(), PlotError> {
    let img = render_loss_plot(points);
    let file = File::create(path).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), img.width, img.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let encode_err = |source| PlotError::Encode {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = encoder.write_header().map_err(encode_err)?;
    writer.write_image_data(&img.pixels).map_err(encode_err)?;
    writer.finish().map_err(encode_err)
}

/// Draw the loss picture into memory (what [`write_loss_plot`] encodes).
pub fn render_loss_plot(points: &[(u64, f64)]) -> RgbImage {
    let mut img = RgbImage::new(WIDTH, HEIGHT, WHITE);
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(s, l)| (s as f64, l))
        .collect();
    let smoothed = smooth_llamafactory(&pts.iter().map(|p| p.1).collect::<Vec<_>>());

    let (x_lo, x_hi) = padded_range(pts.iter().map(|p| p.0), 0.0, 1.0);
    let (y_min, y_max) = padded_range(pts.iter().map(|p| p.1), 0.0, 1.0);
    let pad = (y_max - y_min) * 0.05;
    let (y_lo, y_hi) = (y_min - pad, y_max + pad);
    let map = |x: f64, y: f64| -> (i64, i64) {
        let px = LEFT as f64 + (x - x_lo) / (x_hi - x_lo) * (RIGHT - LEFT - 1) as f64;
        let py = TOP as f64 + (y_hi - y) / (y_hi - y_lo) * (BOTTOM - TOP - 1) as f64;
        (px.round() as i64, py.round() as i64)
    };

    // Grid and tick labels.
    // Steps are integers: x ticks at least 1 apart.
    for t in nice_ticks(x_lo, x_hi, 8, 0) {
        let (px, _) = map(t, y_lo);
        img.fill_rect(px, TOP, px + 1, BOTTOM, GRID);
        img.fill_rect(px, BOTTOM, px + 1, BOTTOM + 5, INK);
        let label = format!("{}", t as i64);
        draw_text(
            &mut img,
            &label,
            px - text_width(&label, 2) / 2,
            BOTTOM + 10,
            2,
            INK,
        );
    }
    let y_ticks = nice_ticks(y_lo, y_hi, 6, i32::MIN);
    let decimals = tick_decimals(&y_ticks);
    for &t in &y_ticks {
        let (_, py) = map(x_lo, t);
        img.fill_rect(LEFT, py, RIGHT, py + 1, GRID);
        img.fill_rect(LEFT - 5, py, LEFT, py + 1, INK);
        let label = format!("{t:.decimals$}");
        draw_text(
            &mut img,
            &label,
            LEFT - 10 - text_width(&label, 2),
            py - 7,
            2,
            INK,
        );
    }

    // Axes box, title, axis labels.
    img.fill_rect(LEFT - 1, TOP, LEFT, BOTTOM + 1, INK);
    img.fill_rect(LEFT - 1, BOTTOM, RIGHT, BOTTOM + 1, INK);
    img.fill_rect(RIGHT, TOP, RIGHT + 1, BOTTOM + 1, INK);
    img.fill_rect(LEFT - 1, TOP - 1, RIGHT + 1, TOP, INK);
    let title = "training loss";
    draw_text(
        &mut img,
        title,
        (WIDTH as i64 - text_width(title, 3)) / 2,
        15,
        3,
        INK,
    );
    draw_text(
        &mut img,
        "step",
        (LEFT + RIGHT - text_width("step", 2)) / 2,
        BOTTOM + 34,
        2,
        INK,
    );
    draw_text(&mut img, "loss", 12, TOP - 24, 2, INK);

    match pts.len() {
        0 => {
            let msg = "no data";
            draw_text(
                &mut img,
                msg,
                (LEFT + RIGHT - text_width(msg, 3)) / 2,
                (TOP + BOTTOM) / 2 - 10,
                3,
                INK,
            );
            return img;
        }
        1 => {
            let (px, py) = map(pts[0].0, pts[0].1);
            img.fill_rect(px - 4, py - 4, px + 5, py + 5, RAW_COLOR);
            img.fill_rect(px - 2, py - 2, px + 3, py + 3, SMOOTH_COLOR);
        }
        _ => {
            for w in pts.windows(2) {
                draw_line(
                    &mut img,
                    map(w[0].0, w[0].1),
                    map(w[1].0, w[1].1),
                    1,
                    RAW_COLOR,
                );
            }
            for (a, b) in pts
                .iter()
                .zip(&smoothed)
                .zip(pts.iter().zip(&smoothed).skip(1))
            {
                draw_line(
                    &mut img,
                    map((a.0).0, *a.1),
                    map((b.0).0, *b.1),
                    2,
                    SMOOTH_COLOR,
                );
            }
        }
    }

    // Legend, top right inside the plot.
    let (lx, ly) = (RIGHT - 170, TOP + 12);
    img.fill_rect(lx, ly, RIGHT - 12, ly + 56, WHITE);
    img.fill_rect(lx, ly, RIGHT - 12, ly + 1, LEGEND_BORDER);
    img.fill_rect(lx, ly + 55, RIGHT - 12, ly + 56, LEGEND_BORDER);
    img.fill_rect(lx, ly, lx + 1, ly + 56, LEGEND_BORDER);
    img.fill_rect(RIGHT - 13, ly, RIGHT - 12, ly + 56, LEGEND_BORDER);
    img.fill_rect(lx + 10, ly + 16, lx + 40, ly + 18, RAW_COLOR);
    draw_text(&mut img, "original", lx + 50, ly + 10, 2, INK);
    img.fill_rect(lx + 10, ly + 39, lx + 40, ly + 42, SMOOTH_COLOR);
    draw_text(&mut img, "smoothed", lx + 50, ly + 33, 2, INK);
    img
}

/// `(min, max)` of finite values, widened to a non-empty interval; `(lo, hi)` when empty.
fn padded_range(values: impl Iterator<Item = f64>, lo: f64, hi: f64) -> (f64, f64) {
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        min = min.min(v);
        max = max.max(v);
    }
    if !min.is_finite() {
        return (lo, hi);
    }
    if max - min <= f64::EPSILON * max.abs().max(1.0) {
        // One distinct value: centre it.
        let half = (min.abs() * 0.1).max(0.5);
        return (min - half, max + half);
    }
    (min, max)
}

/// Round tick positions (1, 2 or 5 × 10^e apart, `e >= min_exp`) inside `[lo, hi]`, about
/// `target` of them. Each tick is `(k · m) / 10^-e` or `(k · m) · 10^e` so that it is the float
/// nearest its decimal value (3.2, not 3.2000000000000002).
fn nice_ticks(lo: f64, hi: f64, target: usize, min_exp: i32) -> Vec<f64> {
    let raw = (hi - lo) / target as f64;
    if !(raw > 0.0 && raw.is_finite()) {
        return Vec::new();
    }
    let mut exp = raw.log10().floor() as i32;
    let mut mult: i64 = match raw / 10f64.powi(exp) {
        n if n < 1.5 => 1,
        n if n < 3.5 => 2,
        n if n < 7.5 => 5,
        _ => 10,
    };
    if exp < min_exp {
        (exp, mult) = (min_exp, 1);
    }
    let value = |k: i64| {
        if exp < 0 {
            (k * mult) as f64 / 10f64.powi(-exp)
        } else {
            (k * mult) as f64 * 10f64.powi(exp)
        }
    };
    let step = value(1);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(value).collect()
}

/// Decimals needed to print ticks `step` apart without repeating labels.
fn tick_decimals(ticks: &[f64]) -> usize {
    match ticks {
        [a, b, ..] => (-(b - a).log10().floor()).clamp(0.0, 6.0) as usize,
        _ => 2,
    }
}

/// Bresenham line of `thickness` × `thickness` square pixels, clipped to the plot area.
fn draw_line(
    img: &mut RgbImage,
    (x0, y0): (i64, i64),
    (x1, y1): (i64, i64),
    thickness: i64,
    c: [u8; 3],
) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        for oy in 0..thickness {
            for ox in 0..thickness {
                let (px, py) = (x + ox, y + oy);
                if (LEFT..RIGHT).contains(&px) && (TOP..BOTTOM).contains(&py) {
                    img.put(px, py, c);
                }
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Width in pixels of `text` drawn at `scale` (6 × scale per character, last gap dropped).
fn text_width(text: &str, scale: i64) -> i64 {
    (text.chars().count() as i64 * 6 - 1).max(0) * scale
}

/// Draw `text` with its top-left corner at (x, y); each font pixel is `scale` × `scale`.
/// Characters without a glyph advance as blanks.
fn draw_text(img: &mut RgbImage, text: &str, x: i64, y: i64, scale: i64, c: [u8; 3]) {
    for (i, ch) in text.chars().enumerate() {
        let rows = glyph(ch);
        let gx = x + i as i64 * 6 * scale;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                // Bit 4 is the leftmost column.
                if bits & (0x10 >> col) != 0 {
                    img.fill_rect(
                        gx + col * scale,
                        y + r as i64 * scale,
                        gx + (col + 1) * scale,
                        y + (r as i64 + 1) * scale,
                        c,
                    );
                }
            }
        }
    }
}

/// 5×7 glyphs (HD44780 style) plus a descender row: eight rows top to bottom, five bits each.
fn glyph(c: char) -> [u8; 8] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E, 0x00],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F, 0x00],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E, 0x00],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02, 0x00],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E, 0x00],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E, 0x00],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E, 0x00],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C, 0x00],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00, 0x00],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F, 0x00],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E, 0x00],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E, 0x00],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F, 0x00],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E, 0x00],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08, 0x00],
        'g' => [0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E, 0x00],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11, 0x00],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E, 0x00],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E, 0x00],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06, 0x00],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D, 0x00],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04, 0x00],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A, 0x00],
        'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x00],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F, 0x00],
        _ => [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(path: &Path) -> RgbImage {
        let decoder = png::Decoder::new(File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        RgbImage {
            width: info.width,
            height: info.height,
            pixels: buf,
        }
    }

    /// Pixels of colour `c` strictly inside the plot area, legend box excluded.
    fn curve_pixels(img: &RgbImage, c: [u8; 3]) -> usize {
        let mut n = 0;
        for y in TOP as u32..BOTTOM as u32 {
            for x in LEFT as u32..RIGHT as u32 {
                let in_legend = x as i64 >= RIGHT - 170 && (y as i64) < TOP + 12 + 56;
                if !in_legend && img.get(x, y) == Some(c) {
                    n += 1;
                }
            }
        }
        n
    }

    fn decaying_loss(n: u64) -> Vec<(u64, f64)> {
        (1..=n)
            .map(|i| {
                (
                    i * 10,
                    5.5 * (-(i as f64) / 40.0).exp() + 3.0 + 0.3 * ((i * 7919) % 13) as f64 / 13.0,
                )
            })
            .collect()
    }

    #[test]
    fn writes_a_png_with_both_curves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("training_loss.png");
        write_loss_plot(&path, &decaying_loss(300)).unwrap();
        let img = decode(&path);
        assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
        assert!(curve_pixels(&img, RAW_COLOR) > 300, "raw curve missing");
        assert!(
            curve_pixels(&img, SMOOTH_COLOR) > 600,
            "smoothed curve missing"
        );
        assert_eq!(img, render_loss_plot(&decaying_loss(300)));
    }

    #[test]
    fn zero_and_one_point_still_make_valid_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        write_loss_plot(&empty, &[]).unwrap();
        let img = decode(&empty);
        assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
        assert_eq!(curve_pixels(&img, SMOOTH_COLOR), 0);

        let one = dir.path().join("one.png");
        write_loss_plot(&one, &[(10, 4.2)]).unwrap();
        let img = decode(&one);
        assert!(curve_pixels(&img, RAW_COLOR) > 0 && curve_pixels(&img, SMOOTH_COLOR) > 0);
    }

    #[test]
    fn non_finite_losses_are_skipped() {
        let mut pts = decaying_loss(50);
        pts[10].1 = f64::NAN;
        pts[20].1 = f64::INFINITY;
        let img = render_loss_plot(&pts);
        assert!(curve_pixels(&img, SMOOTH_COLOR) > 100);
    }

    #[test]
    fn smoothing_is_llamafactory_ema() {
        let v = [4.0, 2.0, 3.0];
        let w = 1.8 * (1.0 / (1.0 + (-0.15f64).exp()) - 0.5);
        let s = smooth_llamafactory(&v);
        assert_eq!(s[0], 4.0);
        assert_eq!(s[1], 4.0 * w + (1.0 - w) * 2.0);
        assert_eq!(s[2], s[1] * w + (1.0 - w) * 3.0);
        assert!(smooth_llamafactory(&[]).is_empty());
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(
            nice_ticks(0.0, 3000.0, 8, 0),
            [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0]
        );
        assert_eq!(
            nice_ticks(2.9, 4.1, 6, i32::MIN),
            [3.0, 3.2, 3.4, 3.6, 3.8, 4.0]
        );
        assert_eq!(nice_ticks(9.5, 10.5, 8, 0), [10.0]);
        assert_eq!(tick_decimals(&[3.0, 3.2]), 1);
        assert_eq!(tick_decimals(&[0.0, 500.0]), 0);
        assert!(nice_ticks(1.0, 1.0, 5, 0).is_empty());
    }
}
