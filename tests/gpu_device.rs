//! GPU devices through the real binary. Without the `cuda` / `vulkan` feature, asking for that
//! device is a clear error that names the rebuild and writes nothing. With `--features cuda` or
//! `--features vulkan` (CI: Mesa's lavapipe, no GPU) the demo predicts on that GPU exactly what it
//! predicts on the CPU, and a short P-Tuning v2 run trains and saves its checkpoint there.

#[path = "support/runs.rs"]
mod runs;

use runs::demo;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The GPU device this build runs on (CUDA when both features are on).
#[cfg(feature = "cuda")]
const GPU: &str = "cuda";
#[cfg(all(feature = "vulkan", not(feature = "cuda")))]
const GPU: &str = "vulkan";

/// [`demo`], which must succeed (`what` names the run in the failure message).
#[cfg(any(feature = "cuda", feature = "vulkan"))]
fn demo_ok(what: &str, sets: &[String]) {
    let out = demo(sets);
    assert!(
        out.status.success(),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[cfg(not(all(feature = "cuda", feature = "vulkan")))]
fn refused(device: &str, feature: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = demo(&[
        format!("device={device}"),
        format!("output_dir={}", out_dir.display()),
        format!("cache_dir={}", tmp.path().join("cache").display()),
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{device} without the feature ran");
    assert!(
        stderr.contains(&format!("--features {feature}")) && stderr.contains("device = \"cpu\""),
        "{stderr}"
    );
    assert!(
        !out_dir.exists(),
        "a refused run wrote {}",
        out_dir.display()
    );
}

#[cfg(not(feature = "vulkan"))]
#[test]
fn vulkan_without_the_feature_is_refused_before_anything_is_written() {
    refused("vulkan", "vulkan");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_refused_before_anything_is_written() {
    refused("cuda:0", "cuda");
}

#[cfg(any(feature = "cuda", feature = "vulkan"))]
#[test]
fn gpu_predicts_what_the_cpu_predicts() {
    let tmp = tempfile::tempdir().unwrap();
    let predictions = |device: &str| {
        let out_dir = tmp.path().join(device);
        demo_ok(
            device,
            &[
                format!("device={device}"),
                "precision=fp32".into(),
                "do_train=false".into(),
                "max_predict_samples=8".into(),
                format!("output_dir={}", out_dir.display()),
                format!("cache_dir={}", tmp.path().join("cache").display()),
            ],
        );
        std::fs::read_to_string(out_dir.join("generated_predictions.txt")).unwrap()
    };
    let cpu = predictions("cpu");
    assert_eq!(cpu.lines().count(), 8);
    // Greedy decoding of the int4 demo model with its initial prefix: the cubecl kernels (GEMV
    // while decoding, dequantize + matmul for the prompt) pick the same tokens as the CPU kernels.
    assert_eq!(predictions(GPU), cpu);
}

#[cfg(any(feature = "cuda", feature = "vulkan"))]
#[test]
fn gpu_trains_the_prefix_and_saves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    demo_ok(
        &format!("{GPU} training"),
        &[
            format!("device={GPU}"),
            "max_steps=2".into(),
            "logging_steps=1".into(),
            "save_steps=2".into(),
            "do_predict=false".into(),
            format!("output_dir={}", out_dir.display()),
            format!("cache_dir={}", tmp.path().join("cache").display()),
        ],
    );
    let losses = runs::logged_losses(&out_dir);
    assert_eq!(losses.len(), 2, "{losses:?}");
    // The demo starts near ln(vocab) ≈ 5.3 on every backend (dropout masks differ per backend).
    assert!(losses.iter().all(|l| (4.5..6.0).contains(l)), "{losses:?}");
    assert!(out_dir.join("checkpoint-2/pytorch_model.bin").exists());
}
