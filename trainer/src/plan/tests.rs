//! Unit tests of the plan's arithmetic.

use burn::tensor::DType;
use glm_model::{ChatGlmConfig, Precision};

use super::estimate::{Dims, block_autodiff_peak_elems, block_inner_elems};
use super::*;

fn input_6b_int4() -> PlanInput {
    let mut model = ChatGlmConfig::chatglm_6b();
    model.pre_seq_len = Some(128);
    PlanInput {
        model,
        device: Device::Cpu,
        precision: Precision::Fp32,
        embedding_dtype: DType::F16,
        quantization_bit: Some(4),
        pre_seq_len: Some(128),
        prefix_projection: false,
        prefix_dropout: true,
        train: Some(TrainShape {
            batch: 1,
            seq_len: 128,
            label_rows: 64,
            recompute: true,
            accumulation: 1,
        }),
        forward: None,
        generate: Some(GenerateShape {
            batch: 1,
            prompt_len: 64,
            max_length: 129,
            num_beams: 1,
            per_row_prefix: true,
        }),
        train_file_bytes: 1 << 20,
        eval_file_bytes: 1 << 16,
        train_rows: 1000,
        eval_rows: 100,
        tokenizer_bytes: 2_706_249,
        largest_checkpoint_tensor: 130528 * 4096 * 2,
        threads: 2,
    }
}

fn item<'a>(plan: &'a MemoryPlan, needle: &str) -> &'a PlanItem {
    plan.items
        .iter()
        .find(|i| i.name.contains(needle))
        .unwrap_or_else(|| panic!("no item {needle:?} in {:#?}", plan.items))
}

#[test]
fn int4_6b_frozen_weights_are_the_exact_byte_count() {
    let plan = MemoryPlan::new(&input_6b_int4());
    // Per block: qkv 12288×2048 + dense 4096×2048 + h_to_4h 16384×2048 + 4h_to_h 4096×8192 bytes.
    let packed_per_block: u64 = 12288 * 2048 + 4096 * 2048 + 16384 * 2048 + 4096 * 8192;
    assert_eq!(packed_per_block, 100_663_296);
    assert_eq!(
        item(&plan, "int4 packed linears").bytes,
        28 * packed_per_block
    );
    assert_eq!(
        item(&plan, "quantization scales").bytes,
        28 * (12288 + 4096 + 16384 + 4096) * 2
    );
    assert_eq!(item(&plan, "word_embeddings").bytes, 130528 * 4096 * 2);
    assert_eq!(item(&plan, "LayerNorms").bytes, 57 * 2 * 4096 * 4);
    // 29.4 M prefix parameters in f32, as much again for the gradient, twice for the moments.
    let prefix = 128 * 2 * 28 * 4096 * 4;
    assert_eq!(item(&plan, "prefix encoder").bytes, prefix);
    assert_eq!(item(&plan, "gradients").bytes, prefix);
    assert_eq!(item(&plan, "AdamW moments").bytes, 2 * prefix);
}

#[test]
fn every_phase_peak_is_the_sum_of_its_items() {
    let plan = MemoryPlan::new(&input_6b_int4());
    assert_eq!(
        plan.phases,
        vec![Phase::Load, Phase::Train, Phase::Generate]
    );
    for &phase in &plan.phases {
        let sum: u64 = plan
            .items
            .iter()
            .filter(|i| i.phases.contains(&phase))
            .map(|i| i.bytes)
            .sum();
        assert_eq!(plan.phase_peak(phase), sum);
    }
    let max = plan
        .phases
        .iter()
        .map(|&p| plan.phase_peak(p))
        .max()
        .unwrap();
    assert_eq!(plan.total_peak(), max);
    assert_eq!(plan.train_peak(), Some(plan.phase_peak(Phase::Train)));
    assert_eq!(
        plan.phase_peak(Phase::Forward),
        0,
        "no forward phase in a run"
    );
    // The table ends with the total.
    let table = plan.table();
    assert!(table.contains("total peak"), "{table}");
    assert!(table.contains("int4 packed linears"), "{table}");
}

#[test]
fn recomputation_lowers_the_activation_estimate() {
    let mut input = input_6b_int4();
    let with = MemoryPlan::new(&input);
    input.train.as_mut().unwrap().recompute = false;
    let without = MemoryPlan::new(&input);
    assert!(
        without.train_peak().unwrap() > with.train_peak().unwrap() + (1 << 30),
        "28 blocks' graphs exceed one block by > 1 GiB"
    );
    // The notes give both numbers whichever is configured.
    let note = |p: &MemoryPlan, s: &str| p.notes.iter().find(|n| n.name.contains(s)).unwrap().bytes;
    assert!(note(&with, "without") > note(&with, "with block"));
    assert_eq!(note(&with, "without"), note(&without, "without"));
}

#[test]
fn activation_terms_grow_with_the_batch() {
    let d = Dims::of(&ChatGlmConfig::with_shape(1024, 4, 16, 4096, 130528));
    assert!(block_inner_elems(&d, 2, 128, 256) > block_inner_elems(&d, 1, 128, 256));
    assert!(block_autodiff_peak_elems(&d, 1, 128, 256) > block_inner_elems(&d, 1, 128, 256));
    // One block of the small shape at S = 128, P = 128 is tens of MiB, not GiB.
    let bytes = block_autodiff_peak_elems(&d, 1, 128, 256) * 4;
    assert!(bytes > (4 << 20) && bytes < (64 << 20), "{bytes}");
}

#[test]
fn generation_cache_scales_with_rows_and_length() {
    let mut input = input_6b_int4();
    input.train = None;
    let one = MemoryPlan::new(&input).phase_peak(Phase::Generate);
    input.generate.as_mut().unwrap().batch = 8;
    let eight = MemoryPlan::new(&input).phase_peak(Phase::Generate);
    // 7 more rows of cache (256 + 129 positions) and of prefix copies, ≥ 1 GiB in f32.
    assert!(eight > one + (1 << 30), "{one} → {eight}");
}

#[test]
fn fp16_halves_activations_and_cuda_counts_device_memory() {
    let mut input = input_6b_int4();
    input.device = Device::Cuda(0);
    input.precision = Precision::Fp16;
    let plan = MemoryPlan::new(&input);
    assert_eq!(plan.target, Target::DeviceMemory);
    assert!(plan.table().contains("device memory"));
    assert_eq!(
        item(&plan, "linear biases").bytes,
        28 * (12288 + 4096 + 16384 + 4096) * 2
    );
}

#[test]
fn rows_are_estimated_from_file_sizes() {
    assert_eq!(estimated_rows(0, None), 0);
    assert_eq!(estimated_rows(BYTES_PER_DATA_LINE * 10, None), 10);
    assert_eq!(estimated_rows(BYTES_PER_DATA_LINE * 10, Some(3)), 3);
}
