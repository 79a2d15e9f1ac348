//! [`QuantBackend`] for burn's CubeCL backends (`burn::backend::Cuda` without the `fusion`
//! feature is `CubeBackend<CudaRuntime, f32, i32, u8>`; `burn::backend::Vulkan` is the same over
//! wgpu), behind the `cuda` or `vulkan` feature.
//!
//! Quantized ops:
//! - up to [`GEMV_MAX_ROWS`] activation rows (decoding): a fused GEMV kernel, one cube per weight
//!   row. Each thread loads its packed bytes as wide vectors (16 bytes on CUDA), dequantizes them
//!   in registers (`f16(scale · q)`, rounded exactly like THUDM), multiplies them with every
//!   activation row, and the cube sums its threads' partial sums in shared memory. No dequantized
//!   weight is ever written to memory. With f16 scales (THUDM's format) and loads of 4 bytes or
//!   more, `quant_gemv_f16_kernel` dequantizes two weights per f16 operation with bit tricks
//!   instead of int → f32 → f16 → f32 conversions; otherwise `quant_gemv_kernel` converts.
//! - more rows (prefill, training, and every input gradient): a small kernel dequantizes a chunk of
//!   packed rows into the activation dtype and burn's own matmul (tensor cores where the device
//!   has them) multiplies it; the chunk is freed before the next one, so the dense copy never
//!   exceeds [`crate::generic::CHUNK_ELEMS`] elements. The dequantization costs one pass over the
//!   chunk per call, which the matmul's `M` rows amortise.
//!
//! Dense frozen ops: up to [`GEMV_MAX_ROWS`] rows against a weight of another dtype (an f16 head
//! under f32 activations) run a dense GEMV kernel that converts in registers; the rest use
//! [`crate::generic`].
//!
//! CI runs these kernels on Vulkan (Mesa's lavapipe, `cargo test -p quant --features vulkan`);
//! CUDA itself is only compiled there (`cargo check --features cuda`).

use burn::tensor::DType;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, tensor_vector_size_parallel};
use half::f16;

use crate::QuantBackend;
use crate::generic::{self, CHUNK_ELEMS};

/// Dequantizes rows `row0 .. row0 + output.shape(0)` of `packed [N, K · bits / 8]` into `output`.
/// int4: high nibble (arithmetic shift of the sign-extended byte) = even column.
#[cube(launch)]
fn dequantize_rows_kernel<F: Float, S: Float, P: Int>(
    packed: &Tensor<P>,
    scales: &Tensor<S>,
    output: &mut Tensor<F>,
    row0: u32,
    #[comptime] bits: u32,
    #[define(F, S, P)] _dtypes: [StorageType; 3],
) {
    let rows = output.shape(0);
    let k = output.shape(1);
    let kb = packed.shape(1);
    let pos = ABSOLUTE_POS;
    if pos >= rows * kb {
        terminate!();
    }
    let row = pos / kb;
    let col = pos % kb;
    let src_row = row0 as usize + row;
    let byte = i32::cast_from(packed[src_row * packed.stride(0) + col * packed.stride(1)]);
    let s = f32::cast_from(scales[src_row * scales.stride(0)]);
    if comptime!(bits == 4) {
        let hi = byte >> 4;
        let lo = (byte << 28) >> 28;
        // scale · q is exact in f32; the f16 cast is the reference's rounding.
        output[row * k + 2 * col] = F::cast_from(f16::cast_from(s * f32::cast_from(hi)));
        output[row * k + 2 * col + 1] = F::cast_from(f16::cast_from(s * f32::cast_from(lo)));
    } else {
        output[row * k + col] = F::cast_from(f16::cast_from(s * f32::cast_from(byte)));
    }
}

/// `Ŵ[row0 .. row0 + rows, :]` as a contiguous `[rows, K]` tensor of `dtype`.
pub fn dequantize_rows<R: CubeRuntime>(
    packed: &CubeTensor<R>,
    scales: &CubeTensor<R>,
    bits: u8,
    row0: usize,
    rows: usize,
    dtype: DType,
) -> CubeTensor<R> {
    let kb = packed.shape()[1];
    let k = kb * 8 / bits as usize;
    let output = empty_device_dtype::<R>(
        packed.client.clone(),
        packed.device.clone(),
        Shape::new([rows, k]),
        dtype,
    );
    let units = rows * kb;
    let cube_dim = CubeDim::new(&packed.client, units);
    let cube_count = calculate_cube_count_elemwise(&packed.client, units, cube_dim);
    let dtypes = [dtype.into(), scales.dtype.into(), packed.dtype.into()];
    dequantize_rows_kernel::launch::<R>(
        &packed.client,
        cube_count,
        cube_dim,
        packed.clone().into_tensor_arg(),
        scales.clone().into_tensor_arg(),
        output.clone().into_tensor_arg(),
        row0 as u32,
        bits as u32,
        dtypes,
    );
    output
}

/// Most activation rows the fused GEMV kernel takes; more rows go through dequantize + matmul.
pub const GEMV_MAX_ROWS: usize = 8;

/// Threads per cube of the GEMV kernel (a power of two, for the shared-memory tree sum).
const GEMV_THREADS: usize = 256;

/// Weight rows per pass of [`quant_gemv_f16_kernel`]: each thread loads the activations of its
/// columns once for this many rows, which cuts their (strided) reads from L1 as many times.
const ROW_BLOCK: usize = 4;

/// `output[i, r] = Σ_c x[i, c] · Ŵ[r, c]` for the `rows` (≤ [`GEMV_MAX_ROWS`]) rows of `x`.
///
/// One cube per weight row `r` (striding over rows when there are more rows than cubes). The
/// packed row is read as vectors of `NP` bytes (up to the device's load width, 16 bytes on CUDA):
/// thread `t` takes vectors `t, t + threads, …`, so each load instruction of a warp reads one
/// contiguous run of `32 · NP` bytes. It keeps one f32 partial sum per activation row, then the
/// cube adds the partial sums in shared memory. `x`, `packed` and `output` are contiguous.
#[cube(launch)]
fn quant_gemv_kernel<F: Float, S: Float, P: Int, NP: Size>(
    x: &Tensor<F>,
    packed: &Tensor<Vector<P, NP>>,
    scales: &Tensor<S>,
    output: &mut Tensor<F>,
    #[comptime] bits: u32,
    #[comptime] rows: usize,
    #[comptime] threads: usize,
    #[define(F, S, P)] _dtypes: [StorageType; 3],
) {
    let n = packed.shape(0);
    let vs = packed.vector_size();
    // Shapes count elements (bytes); indices count vectors.
    let vectors = packed.shape(1) / vs;
    let k = x.shape(1);
    let unit = UNIT_POS_X as usize;
    let mut partial = SharedMemory::<f32>::new(rows * threads);
    let mut r = CUBE_POS_X as usize;
    // `r` is the same for every thread of the cube, so the barriers below are reached uniformly.
    while r < n {
        let s = f32::cast_from(scales[r]);
        let mut acc = Array::<f32>::new(rows);
        #[unroll]
        for i in 0..rows {
            acc[i] = 0.0;
        }
        let mut v = unit;
        while v < vectors {
            let bytes = packed[r * vectors + v];
            #[unroll]
            for j in 0..vs {
                let byte = i32::cast_from(bytes[j]);
                let b = v * vs + j;
                if comptime!(bits == 4) {
                    // High nibble (arithmetic shift of the sign-extended byte) = even column.
                    let w0 = f32::cast_from(f16::cast_from(s * f32::cast_from(byte >> 4)));
                    let w1 = f32::cast_from(f16::cast_from(s * f32::cast_from((byte << 28) >> 28)));
                    #[unroll]
                    for i in 0..rows {
                        let xi = i * k + 2 * b;
                        acc[i] += f32::cast_from(x[xi]) * w0 + f32::cast_from(x[xi + 1]) * w1;
                    }
                } else {
                    let w = f32::cast_from(f16::cast_from(s * f32::cast_from(byte)));
                    #[unroll]
                    for i in 0..rows {
                        acc[i] += f32::cast_from(x[i * k + b]) * w;
                    }
                }
            }
            v += threads;
        }
        store_row_sums::<F>(&acc, &mut partial, output, r, rows, 1usize, threads);
        r += CUBE_COUNT_X as usize;
    }
}

/// [`quant_gemv_kernel`] for f16 scales and rows read at least 4 bytes at a time, dequantizing
/// two weights per f16 operation instead of converting each one through f32.
///
/// Each 32-bit word of a loaded vector holds 4 packed bytes. Masking it with `0x000F000F` (int4)
/// or `0x00FF00FF` (int8) after a shift puts two values in the low bits of its two 16-bit
/// halves; flipping their sign bit and or-ing in `0x6400` (the f16 1024) makes each half the
/// f16 `1024 + q + 8` (int4) or `1024 + q + 128` (int8), exact since both stay below 2048.
/// Subtracting that bias and multiplying by the f16 scale in f16 gives `f16(scale · q)`: the
/// product of two f16 values is exact in f32 and rounded once to f16, as THUDM rounds it. No
/// int → float conversion and no f32 → f16 conversion is left, the slow steps of the f32 path
/// on GPUs (conversions issue at a fraction of the f32 rate).
///
/// A cube takes [`ROW_BLOCK`] weight rows per pass. Thread `t` owns the same packed vectors
/// `t, t + threads, …` in each of them and loads the activations of their columns once, in
/// vectors, into registers (as f32) for all the block's rows: a thread's columns are a
/// contiguous run, so the activations a warp reads at one instruction lie a run's length apart,
/// and reading them once per block instead of once per row divides that cost by the block.
#[cube(launch)]
fn quant_gemv_f16_kernel<F: Float, P: Int, NP: Size, NU: Size, NX: Size>(
    x: &Tensor<Vector<F, NX>>,
    packed: &Tensor<Vector<P, NP>>,
    scales: &Tensor<f16>,
    output: &mut Tensor<F>,
    #[comptime] bits: u32,
    #[comptime] rows: usize,
    #[comptime] threads: usize,
    #[define(F, P)] _dtypes: [StorageType; 2],
) {
    let n = packed.shape(0);
    let vs = packed.vector_size();
    let vectors = packed.shape(1) / vs;
    let xw = x.vector_size();
    // x vectors per activation row, and per packed vector (its 2 · vs or vs columns).
    let x_row = x.shape(1) / xw;
    // Columns per packed byte (2 for int4, 1 for int8) and per loaded vector.
    let per_byte = comptime!(8 / bits as usize);
    let cols = comptime!(per_byte * vs);
    let x_per = comptime!(cols / xw);
    let unit = UNIT_POS_X as usize;
    let mut partial = SharedMemory::<f32>::new(comptime!(rows * ROW_BLOCK * threads));
    // The bias (an f16 pair), the mask and the sign flip with the 0x6400 (u32 words); see above.
    let bias2 =
        Vector::<f16, Const<2>>::new(f16::new(comptime!(if bits == 4 { 1032.0 } else { 1152.0 })));
    let mask = comptime!(if bits == 4 {
        0x000F_000Fu32
    } else {
        0x00FF_00FFu32
    });
    let flip = comptime!(if bits == 4 {
        0x6408_6408u32
    } else {
        0x6480_6480u32
    });
    let mut r = CUBE_POS_X as usize * ROW_BLOCK;
    while r < n {
        let mut acc = Array::<f32>::new(comptime!(rows * ROW_BLOCK));
        #[unroll]
        for j in 0..comptime!(rows * ROW_BLOCK) {
            acc[j] = 0.0;
        }
        let mut v = unit;
        while v < vectors {
            // The activations of this vector's columns, loaded once for the block's rows.
            let mut xs = Array::<f32>::new(comptime!(rows * cols));
            #[unroll]
            for i in 0..rows {
                #[unroll]
                for q in 0..x_per {
                    let xv = x[i * x_row + v * x_per + q];
                    #[unroll]
                    for l in 0..xw {
                        xs[i * cols + q * xw + l] = f32::cast_from(xv[l]);
                    }
                }
            }
            #[unroll]
            for b in 0..ROW_BLOCK {
                // Rows past the end repeat the last one; their sums are never stored.
                let row = select(r + b < n, r + b, n - 1);
                let s2 = Vector::<f16, Const<2>>::new(scales[row]);
                let words = Vector::<u32, NU>::reinterpret(packed[row * vectors + v]);
                #[unroll]
                for u in 0..words.size() {
                    let w = words[u];
                    // Pair p takes bytes p % 2 and p % 2 + 2 of the word, shifted down by
                    // 8 · (p % 2) + 4 · (p / 2): int4 pairs 0, 1 are low nibbles (odd columns),
                    // 2, 3 high nibbles (even columns); int8 has pairs 0, 1 only. `c` is the
                    // low half's column; the high half's is two bytes' columns further.
                    #[unroll]
                    for p in 0..comptime!(16 / bits as usize) {
                        let shift = 8 * (p % 2) + 4 * (p / 2);
                        let c =
                            4 * per_byte * u + per_byte * (p % 2) + (per_byte - 1) * (1 - p / 2);
                        let h = ((w >> shift as u32) & mask) ^ flip;
                        let w2 = (Vector::<f16, Const<2>>::reinterpret(h) - bias2) * s2;
                        let (w0, w1) = (f32::cast_from(w2[0]), f32::cast_from(w2[1]));
                        #[unroll]
                        for i in 0..rows {
                            acc[b * rows + i] +=
                                xs[i * cols + c] * w0 + xs[i * cols + c + 2 * per_byte] * w1;
                        }
                    }
                }
            }
            v += threads;
        }
        store_row_sums::<F>(&acc, &mut partial, output, r, rows, ROW_BLOCK, threads);
        r += CUBE_COUNT_X as usize * ROW_BLOCK;
    }
}

/// `output[i, r + b] = Σ_threads acc[b · rows + i]` for `i < rows`, `b < block` and `r + b < N`:
/// the cube's tree sum in shared memory. Every thread of the cube must call it (it holds
/// barriers).
#[cube]
fn store_row_sums<F: Float>(
    acc: &Array<f32>,
    partial: &mut SharedMemory<f32>,
    output: &mut Tensor<F>,
    r: usize,
    #[comptime] rows: usize,
    #[comptime] block: usize,
    #[comptime] threads: usize,
) {
    let unit = UNIT_POS_X as usize;
    let n = output.shape(1);
    #[unroll]
    for j in 0..comptime!(rows * block) {
        partial[j * threads + unit] = acc[j];
    }
    sync_cube();
    // A run-time loop: a comptime `threads / 2` here would be folded once and never halve.
    let mut half = CUBE_DIM_X as usize / 2;
    while half > 0 {
        if unit < half {
            #[unroll]
            for j in 0..comptime!(rows * block) {
                partial[j * threads + unit] += partial[j * threads + unit + half];
            }
        }
        sync_cube();
        half /= 2;
    }
    if unit < rows * block {
        let (b, i) = (unit / rows, unit % rows);
        if r + b < n {
            output[i * n + r + b] = F::cast_from(partial[unit * threads]);
        }
    }
    // Nobody may overwrite `partial` for the next row before the sums above are read.
    sync_cube();
}

/// `output[i, r] = Σ_c x[i, c] · W[r, c]` for a dense frozen weight `W [N, K]` of any float
/// dtype, converted in registers; same cube layout and vector loads as [`quant_gemv_kernel`].
/// The activations of a weight vector's columns are read as one vector of the same width: a
/// thread's columns are a contiguous run, so scalar reads would touch a new cache sector per
/// thread for every column.
#[cube(launch)]
fn dense_gemv_kernel<F: Float, W: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    weight: &Tensor<Vector<W, N>>,
    output: &mut Tensor<F>,
    #[comptime] rows: usize,
    #[comptime] threads: usize,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let n = weight.shape(0);
    let k = weight.shape(1);
    let vs = weight.vector_size();
    let vectors = k / vs;
    let unit = UNIT_POS_X as usize;
    let mut partial = SharedMemory::<f32>::new(rows * threads);
    let mut r = CUBE_POS_X as usize;
    while r < n {
        let mut acc = Array::<f32>::new(rows);
        #[unroll]
        for i in 0..rows {
            acc[i] = 0.0;
        }
        let mut v = unit;
        while v < vectors {
            let ws = weight[r * vectors + v];
            #[unroll]
            for i in 0..rows {
                let xv = x[i * vectors + v];
                #[unroll]
                for j in 0..vs {
                    acc[i] += f32::cast_from(xv[j]) * f32::cast_from(ws[j]);
                }
            }
            v += threads;
        }
        store_row_sums::<F>(&acc, &mut partial, output, r, rows, 1usize, threads);
        r += CUBE_COUNT_X as usize;
    }
}

/// Cubes and threads per cube for a GEMV over `n` weight rows of `row_len` loads: a power of
/// two of threads (the tree sum), no more than the row has loads; at most `u16::MAX` cubes,
/// which then stride over the rows.
fn gemv_launch(n: usize, row_len: usize) -> (CubeCount, CubeDim, usize) {
    let threads = row_len.next_power_of_two().clamp(32, GEMV_THREADS);
    let cubes = n.clamp(1, u16::MAX as usize) as u32;
    (
        CubeCount::Static(cubes, 1, 1),
        CubeDim::new_1d(threads as u32),
        threads,
    )
}

fn gemv_output<R: CubeRuntime>(x: &CubeTensor<R>, n: usize) -> CubeTensor<R> {
    let [m, _] = x.shape().dims::<2>();
    assert!(
        (1..=GEMV_MAX_ROWS).contains(&m),
        "GEMV kernels take 1..={GEMV_MAX_ROWS} activation rows, got {m}"
    );
    empty_device_dtype::<R>(
        x.client.clone(),
        x.device.clone(),
        Shape::new([m, n]),
        x.dtype,
    )
}

/// `y [M, N] = x [M, K] · Ŵᵀ` by the fused GEMV (`quant_gemv_f16_kernel` or
/// `quant_gemv_kernel`, see [`quant_gemv_with_loads`]) at the device's widest load (narrower for
/// several rows under the f16 kernel), for `1 ≤ M ≤ GEMV_MAX_ROWS`; all inputs contiguous.
pub fn quant_gemv<R: CubeRuntime>(
    x: &CubeTensor<R>,
    packed: &CubeTensor<R>,
    scales: &CubeTensor<R>,
    bits: u8,
) -> CubeTensor<R> {
    let mut width = gemv_load_width(packed);
    if scales.dtype == DType::F16 {
        // The f16 kernel keeps rows · (columns per load) activations in registers: at most 64,
        // so that 8 rows read 4 bytes at a time instead of spilling.
        let m = x.shape()[0];
        while width > 4 && m * width * 8 / bits as usize > 64 {
            width /= 2;
        }
    }
    quant_gemv_with_loads(x, packed, scales, bits, width)
}

/// The elements per load the GEMV kernels read a row of `weight` with: the widest vector the
/// device loads at once (16 bytes on CUDA: 16 packed int4/int8 bytes or 8 f16 values) whose width
/// divides the row; a row of 4096 int4 columns is 2048 bytes.
pub fn gemv_load_width<R: CubeRuntime>(weight: &CubeTensor<R>) -> usize {
    tensor_vector_size_parallel(
        weight.client.io_optimized_vector_sizes(weight.dtype.size()),
        weight.meta.shape(),
        weight.meta.strides(),
        1,
    )
}

/// [`quant_gemv`] reading the packed rows `load_width` bytes at a time, so that a benchmark can
/// set the widths side by side: `quant_gemv_f16_kernel` for f16 scales from 4 bytes up,
/// `quant_gemv_kernel` otherwise. Panics unless `load_width` divides the row and is one the
/// device loads (a power of two up to [`gemv_load_width`]'s device maximum).
pub fn quant_gemv_with_loads<R: CubeRuntime>(
    x: &CubeTensor<R>,
    packed: &CubeTensor<R>,
    scales: &CubeTensor<R>,
    bits: u8,
    load_width: usize,
) -> CubeTensor<R> {
    let [n, kb] = packed.shape().dims::<2>();
    assert!(
        packed
            .client
            .io_optimized_vector_sizes(packed.dtype.size())
            .any(|w| w == load_width)
            && kb % load_width == 0,
        "quant_gemv: cannot read rows of {kb} bytes {load_width} bytes at a time on this device"
    );
    let output = gemv_output(x, n);
    if scales.dtype == DType::F16 && load_width >= 4 {
        // x in vectors that divide the columns of one packed vector (and so x's rows, which
        // hold a whole number of packed vectors).
        let cols = load_width * 8 / bits as usize;
        let x_width = x
            .client
            .io_optimized_vector_sizes(x.dtype.size())
            .filter(|w| cols.is_multiple_of(*w))
            .max()
            .unwrap_or(1);
        // At most 128 threads: the shared memory holds rows · ROW_BLOCK sums per thread.
        let threads = (kb / load_width).next_power_of_two().clamp(32, 128);
        let cubes = n.div_ceil(ROW_BLOCK).clamp(1, u16::MAX as usize) as u32;
        quant_gemv_f16_kernel::launch::<R>(
            &x.client,
            CubeCount::Static(cubes, 1, 1),
            CubeDim::new_1d(threads as u32),
            load_width,
            load_width / 4,
            x_width,
            x.clone().into_tensor_arg(),
            packed.clone().into_tensor_arg(),
            scales.clone().into_tensor_arg(),
            output.clone().into_tensor_arg(),
            bits as u32,
            x.shape()[0],
            threads,
            [x.dtype.into(), packed.dtype.into()],
        );
        return output;
    }
    let (cubes, cube_dim, threads) = gemv_launch(n, kb / load_width);
    let dtypes = [x.dtype.into(), scales.dtype.into(), packed.dtype.into()];
    quant_gemv_kernel::launch::<R>(
        &x.client,
        cubes,
        cube_dim,
        load_width,
        x.clone().into_tensor_arg(),
        packed.clone().into_tensor_arg(),
        scales.clone().into_tensor_arg(),
        output.clone().into_tensor_arg(),
        bits as u32,
        x.shape()[0],
        threads,
        dtypes,
    );
    output
}

/// `y [M, N] = x [M, K] · Wᵀ` by `dense_gemv_kernel`, for `1 ≤ M ≤ GEMV_MAX_ROWS`; both
/// inputs contiguous, `W` in any float dtype, `y` in `x`'s.
pub fn dense_gemv<R: CubeRuntime>(x: &CubeTensor<R>, weight: &CubeTensor<R>) -> CubeTensor<R> {
    let [n, k] = weight.shape().dims::<2>();
    let output = gemv_output(x, n);
    // One width for both: the widest the weight's rows take that x's dtype takes too (8 f16
    // weights would need 8 f32 activations, wider than CUDA loads).
    let x_widest = x
        .client
        .io_optimized_vector_sizes(x.dtype.size())
        .max()
        .unwrap_or(1);
    let load_width = gemv_load_width(weight).min(x_widest);
    let (cubes, cube_dim, threads) = gemv_launch(n, k / load_width);
    dense_gemv_kernel::launch::<R>(
        &x.client,
        cubes,
        cube_dim,
        load_width,
        x.clone().into_tensor_arg(),
        weight.clone().into_tensor_arg(),
        output.clone().into_tensor_arg(),
        x.shape()[0],
        threads,
        [x.dtype.into(), weight.dtype.into()],
    );
    output
}

fn row_chunks(n: usize, k: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = (CHUNK_ELEMS / k.max(1)).clamp(1, n.max(1));
    (0..n).step_by(step).map(move |r0| (r0, step.min(n - r0)))
}

/// `(N, K)` of the weight packed as `[N, K · bits / 8]`; panics (naming `op`) unless `bits` is 4 or 8.
fn weight_shape<R: CubeRuntime>(packed: &CubeTensor<R>, bits: u8, op: &str) -> (usize, usize) {
    assert!(
        bits == 4 || bits == 8,
        "{op}: bits must be 4 or 8, got {bits}"
    );
    let [n, kb] = packed.shape().dims::<2>();
    (n, kb * 8 / bits as usize)
}

impl<R, F, I, BT> QuantBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn quant_linear(
        x: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bits: u8,
    ) -> FloatTensor<Self> {
        let (n, k) = weight_shape(&packed, bits, "quant_linear");
        assert_eq!(
            x.shape().dims::<2>()[1],
            k,
            "quant_linear: x features differ from the packed weight's"
        );
        let (packed, scales) = (into_contiguous(packed), into_contiguous(scales));
        let m = x.shape().dims::<2>()[0];
        if (1..=GEMV_MAX_ROWS).contains(&m) && n > 0 {
            return quant_gemv(&into_contiguous(x), &packed, &scales, bits);
        }
        let dtype = x.dtype();
        let parts: Vec<_> = row_chunks(n, k)
            .map(|(r0, rows)| {
                let w = dequantize_rows(&packed, &scales, bits, r0, rows, dtype);
                Self::float_matmul(x.clone(), Self::float_transpose(w))
            })
            .collect();
        if parts.is_empty() {
            return generic::quant_linear::<Self>(x, packed, scales, bits);
        }
        Self::float_cat(parts, 1)
    }

    fn quant_linear_grad_input(
        grad_y: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bits: u8,
    ) -> FloatTensor<Self> {
        let (n, k) = weight_shape(&packed, bits, "quant_linear_grad_input");
        let m = grad_y.shape().dims::<2>()[0];
        let (packed, scales) = (into_contiguous(packed), into_contiguous(scales));
        let dtype = grad_y.dtype();
        let mut gx: Option<FloatTensor<Self>> = None;
        for (r0, rows) in row_chunks(n, k) {
            let w = dequantize_rows(&packed, &scales, bits, r0, rows, dtype);
            let gy = Self::float_slice(grad_y.clone(), &[(0..m).into(), (r0..r0 + rows).into()]);
            let part = Self::float_matmul(gy, w);
            gx = Some(match gx {
                None => part,
                Some(acc) => Self::float_add(acc, part),
            });
        }
        match gx {
            Some(g) => g,
            None => generic::quant_linear_grad_input::<Self>(grad_y, packed, scales, bits),
        }
    }

    fn frozen_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let m = x.shape().dims::<2>()[0];
        let [n, k] = weight.shape().dims::<2>();
        assert_eq!(
            x.shape().dims::<2>()[1],
            k,
            "frozen_linear: x features differ from the weight's columns"
        );
        // Same dtypes: burn's matmul reads the weight as it is. Different ones (an f16 head under
        // f32 activations): the GEMV converts in registers instead of a converted copy per chunk.
        if x.dtype() != weight.dtype() && (1..=GEMV_MAX_ROWS).contains(&m) && n > 0 {
            return dense_gemv(&into_contiguous(x), &into_contiguous(weight));
        }
        generic::frozen_linear::<Self>(x, weight)
    }

    fn frozen_linear_grad_input(
        grad_y: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic::frozen_linear_grad_input::<Self>(grad_y, weight)
    }
}
