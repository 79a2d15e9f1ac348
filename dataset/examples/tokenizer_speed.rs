//! Single-thread encode speed of the ChatGLM tokenizer on AdvertiseGen rows (content and summary
//! of `shared/data/advertisegen/train_first5000.json`), plus load time and a per-string figure.
//!
//! Run: `cargo run --release -p dataset --example tokenizer_speed [-- <model dir> <jsonl file>]`.
//! Reports thread CPU time (the build machine is shared) next to wall time; best of 5 passes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dataset::tokenizer::ChatGlmTokenizer;

/// CPU time of this thread from `/proc/thread-self/schedstat` (falls back to `None`).
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shared = std::env::var_os("GLM_TUNE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let mut args = std::env::args().skip(1);
    let model_dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("chatglm-6b"));
    let data = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("advertisegen/train_first5000.json"));

    let (t, c) = (Instant::now(), thread_cpu());
    let tok = ChatGlmTokenizer::from_dir(&model_dir)?;
    let load_cpu = match (c, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => t.elapsed(),
    };
    println!(
        "load: {:.1} ms CPU ({:.1} ms wall), {} pieces",
        load_cpu.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3,
        tok.vocab_size()
    );

    let mut rows = Vec::new();
    for line in std::fs::read_to_string(&data)?
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        rows.push((field("content"), field("summary")));
    }
    let chars: usize = rows
        .iter()
        .map(|(c, s)| c.chars().count() + s.chars().count())
        .sum();

    let (mut best_cpu, mut best_wall, mut n_ids) = (Duration::MAX, Duration::MAX, 0usize);
    for _ in 0..5 {
        let (w, c) = (Instant::now(), thread_cpu());
        n_ids = 0;
        for (content, summary) in &rows {
            n_ids += tok.encode(content, false).len() + tok.encode(summary, false).len();
        }
        let wall = w.elapsed();
        let cpu = match (c, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => wall,
        };
        best_wall = best_wall.min(wall);
        best_cpu = best_cpu.min(cpu);
    }
    let per_row = best_cpu.as_secs_f64() / rows.len() as f64;
    println!(
        "encode content+summary, 1 thread: {} rows, {chars} chars, {n_ids} ids: {:.1} ms CPU ({:.1} ms wall) \
         = {:.0} rows/s, {:.1} µs/row, {:.2} µs per 100 chars",
        rows.len(),
        best_cpu.as_secs_f64() * 1e3,
        best_wall.as_secs_f64() * 1e3,
        1.0 / per_row,
        per_row * 1e6,
        best_cpu.as_secs_f64() * 1e6 / chars as f64 * 100.0
    );

    let sample: String = rows
        .iter()
        .map(|(_, s)| s.as_str())
        .find(|s| s.chars().count() >= 100)
        .unwrap_or("")
        .chars()
        .take(100)
        .collect();
    let reps = 20_000;
    let c = thread_cpu();
    let w = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(tok.encode(std::hint::black_box(&sample), false));
    }
    let cpu = match (c, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => w.elapsed(),
    };
    println!(
        "encode of one 100-character Chinese string: {:.2} µs",
        cpu.as_secs_f64() * 1e6 / reps as f64
    );
    Ok(())
}
