//! Throughput of the training data pipeline on `shared/data/advertisegen/train_first5000.json`:
//! read + JSON parse + tokenize + build training rows (Ms = Mt = 64, no cache), on ONE thread,
//! printed as rows/s with a breakdown of where the time goes; then the same on all cores.
//!
//! Run: `cargo bench -p dataset --bench preprocess` (env `BENCH_REPS`, default 3; the best
//! repetition is reported).

#[path = "../../tests/support/fixtures.rs"]
mod fixtures;

use std::time::{Duration, Instant};

use dataset::preprocess::{
    DataArgs, SpecialIds, build_train_row, preprocess_eval, preprocess_train, train_prompt,
};
use dataset::source::{parse_examples, read_bytes};
use dataset::tokenizer::ChatGlmTokenizer;

/// CPU time of the calling thread (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`): the machine
/// this runs on is shared, so CPU time is the stable single-thread measure.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu() -> Option<Duration> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on 64-bit Linux).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu() -> Option<Duration> {
    None
}

/// Best (wall, thread CPU) over `reps` runs of `f`, and its last result. CPU falls back to wall
/// where schedstat is unavailable.
fn best<T>(reps: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut out = None;
    let (mut wall, mut cpu) = (Duration::MAX, Duration::MAX);
    for _ in 0..reps {
        let (t, c) = (Instant::now(), thread_cpu());
        let v = f();
        let w = t.elapsed();
        wall = wall.min(w);
        cpu = cpu.min(match (c, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => w,
        });
        out = Some(v);
    }
    (wall, cpu, out.expect("at least one repetition"))
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let data = fixtures::shared_data();
    let tok =
        ChatGlmTokenizer::from_dir(&data.join("chatglm-6b")).expect("load the ChatGLM tokenizer");
    let path = data.join("advertisegen/train_first5000.json");
    let args = DataArgs {
        max_source_length: 64,
        max_target_length: 64,
        ..DataArgs::new("content", "summary")
    };
    let cols = args.columns();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("1-thread pool");

    // End to end on one thread (the 1-thread pool runs the closure on its worker, so the
    // whole pipeline is timed inside it).
    let runs: Vec<(Duration, Duration, usize)> = (0..reps)
        .map(|_| {
            one.install(|| {
                let (wall, cpu, rows) = best(1, || {
                    let bytes = read_bytes(&path).expect("read");
                    let (examples, _) = parse_examples(&path, &bytes, &cols).expect("parse");
                    preprocess_train(&tok, &examples, &args).expect("rows")
                });
                (wall, cpu, rows.len())
            })
        })
        .collect();
    let total = runs.iter().map(|r| r.0).min().expect("reps >= 1");
    let total_cpu = runs.iter().map(|r| r.1).min().expect("reps >= 1");
    let n = runs[0].2;

    // Breakdown: each stage alone on this thread.
    let (_, c_read, bytes) = best(reps, || read_bytes(&path).expect("read"));
    let (_, c_parse, (examples, _)) = best(reps, || {
        parse_examples(&path, &bytes, &cols).expect("parse")
    });
    let (_, c_prompt, a) = best(reps, || {
        examples
            .iter()
            .map(|e| tok.encode(&train_prompt(e, &args), false))
            .collect::<Vec<_>>()
    });
    let (_, c_resp, b) = best(reps, || {
        examples
            .iter()
            .map(|e| tok.encode(&e.response, false))
            .collect::<Vec<_>>()
    });
    let sp = SpecialIds::of(&tok);
    let (_, c_build, built) = best(reps, || {
        a.iter()
            .zip(&b)
            .map(|(a, b)| build_train_row(a, b, &args, &sp))
            .collect::<Vec<_>>()
    });
    let rows = one
        .install(|| preprocess_train(&tok, &examples, &args))
        .expect("rows");
    assert_eq!(built, rows, "stage-wise rows equal the pipeline's");

    let (t_par, _, _) = best(reps, || {
        preprocess_train(&tok, &examples, &args).expect("rows")
    });
    let dev = data.join("advertisegen/dev.json");
    let (dev_examples, _) =
        parse_examples(&dev, &read_bytes(&dev).expect("read dev"), &cols).expect("parse dev");
    let (_, c_eval, eval_n) = one.install(|| {
        best(reps, || {
            preprocess_eval(&tok, &dev_examples, &args)
                .expect("eval rows")
                .len()
        })
    });

    let rate = |d: Duration, k: usize| k as f64 / d.as_secs_f64();
    let stages = c_read + c_parse + c_prompt + c_resp + c_build;
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / stages.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("train_first5000.json: {n} rows, Ms = Mt = 64, best of {reps}");
    println!(
        "single thread, read + parse + tokenize + rows: {:.1} ms CPU = {:.0} rows/s  (wall {:.1} ms = {:.0} rows/s)",
        ms(total_cpu),
        rate(total_cpu, n),
        ms(total),
        rate(total, n)
    );
    println!("  stage (CPU time)  ms        share");
    println!(
        "  read file        {:8.2}  {:5.1} %",
        ms(c_read),
        pct(c_read)
    );
    println!(
        "  JSON parse       {:8.2}  {:5.1} %",
        ms(c_parse),
        pct(c_parse)
    );
    println!(
        "  encode prompts   {:8.2}  {:5.1} %",
        ms(c_prompt),
        pct(c_prompt)
    );
    println!(
        "  encode responses {:8.2}  {:5.1} %",
        ms(c_resp),
        pct(c_resp)
    );
    println!(
        "  build rows       {:8.2}  {:5.1} %",
        ms(c_build),
        pct(c_build)
    );
    println!(
        "all {} threads, tokenize + rows: {:.1} ms wall = {:.0} rows/s",
        rayon::current_num_threads(),
        ms(t_par),
        rate(t_par, n)
    );
    println!(
        "single thread, eval rows of dev.json: {eval_n} rows in {:.1} ms CPU = {:.0} rows/s",
        ms(c_eval),
        rate(c_eval, eval_n)
    );
}
