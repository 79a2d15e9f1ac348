//! Tiled GEMM for many activation rows: each rayon task converts a `[nb, kb]` tile of the weight
//! (packed int4/int8, or f16/bf16/strided dense) into an f32 scratch buffer and multiplies it with
//! the `gemm` crate (the kernels flex uses), so no whole-matrix f32 copy ever exists. Tiles are
//! large enough (256 rows × up to 4096 columns) that `gemm`'s repacking of the activations is
//! amortised: measured at 0.93–1.0× flex's f32 matmul on the ChatGLM-6B shapes.

use rayon::prelude::*;

use super::{Isa, PackedMatrix, SendPtr, scalar};

/// Forward tiles: weight rows per task.
const FWD_ROWS: usize = 256;
/// Gradient tiles: weight columns per task and weight rows per step.
const GRAD_COLS: usize = 256;
const GRAD_ROWS: usize = 512;
/// f32 elements of one forward scratch tile (4 MiB per task; freed when the call returns).
const TILE_ELEMS: usize = 1 << 20;

/// Something that can write f32 tiles of a `[rows, cols]` weight.
pub(super) trait TileSource: Sync {
    /// Weight rows (output features).
    fn rows(&self) -> usize;
    /// Weight columns (input features).
    fn cols(&self) -> usize;
    /// Writes `W[n0 .. n0 + nb, k0 .. k0 + kb]` row-major into `out[.. nb · kb]` (`k0` is even).
    fn fill(&self, n0: usize, nb: usize, k0: usize, kb: usize, out: &mut [f32]);
}

/// Packed int4/int8 weight as a tile source.
pub(super) struct PackedTiles<'a> {
    pub w: PackedMatrix<'a>,
    pub isa: Isa,
}

impl TileSource for PackedTiles<'_> {
    fn rows(&self) -> usize {
        self.w.n
    }
    fn cols(&self) -> usize {
        self.w.k
    }
    fn fill(&self, n0: usize, nb: usize, k0: usize, kb: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.isa.avx2() {
            // SAFETY: Isa::Avx2 and above are only used after runtime detection; bounds are asserted
            // inside.
            unsafe { super::x86::fill_tile(&self.w, n0, nb, k0, kb, out) };
            return;
        }
        for r in 0..nb {
            scalar::dequant_row_range(&self.w, n0 + r, k0, &mut out[r * kb..(r + 1) * kb]);
        }
    }
}

/// Column tile width for a tile of `rows` rows: a multiple of 32 (even, SIMD-block aligned).
fn col_tile(rows: usize, k: usize) -> usize {
    ((TILE_ELEMS / rows.max(1)) / 32 * 32).clamp(32, k.max(32))
}

/// `y [m, n] = x [m, k] · Wᵀ`, tasks over blocks of weight rows (output columns).
pub(super) fn linear<S: TileSource>(x: &[f32], m: usize, src: &S, y: &mut [f32]) {
    let (n, k) = (src.rows(), src.cols());
    assert!(
        x.len() == m * k && y.len() == m * n,
        "tiled linear: shape mismatch"
    );
    if k == 0 {
        y.fill(0.0);
        return;
    }
    // At most FWD_ROWS rows per task, fewer when that leaves under 4 tasks per thread.
    let rows = (n / (4 * rayon::current_num_threads())).clamp(32, FWD_ROWS) / 16 * 16;
    let kb_max = col_tile(rows, k);
    let yp = SendPtr(y.as_mut_ptr());
    (0..n.div_ceil(rows)).into_par_iter().for_each_init(
        || vec![0f32; rows.min(n) * kb_max],
        |scratch, p| {
            let n0 = p * rows;
            let nb = rows.min(n - n0);
            for (t, k0) in (0..k).step_by(kb_max).enumerate() {
                let kb = kb_max.min(k - k0);
                src.fill(n0, nb, k0, kb, &mut scratch[..nb * kb]);
                // SAFETY: task p writes only columns n0..n0+nb of y (disjoint across tasks); the
                // strides describe x [m, k] row-major, the tile as Wᵀ [kb, nb] and y [m, n] row-major.
                unsafe {
                    gemm::gemm(
                        m,
                        nb,
                        kb,
                        yp.get().add(n0),
                        1,
                        n as isize,
                        t > 0,
                        x.as_ptr().add(k0),
                        1,
                        k as isize,
                        scratch.as_ptr(),
                        kb as isize,
                        1,
                        1.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        },
    );
}

/// `g_x [m, k] = g_y [m, n] · W`, tasks over blocks of weight columns (gradient columns).
pub(super) fn linear_grad<S: TileSource>(gy: &[f32], m: usize, src: &S, gx: &mut [f32]) {
    let (n, k) = (src.rows(), src.cols());
    assert!(
        gy.len() == m * n && gx.len() == m * k,
        "tiled linear_grad: shape mismatch"
    );
    if n == 0 {
        gx.fill(0.0);
        return;
    }
    let gxp = SendPtr(gx.as_mut_ptr());
    (0..k.div_ceil(GRAD_COLS)).into_par_iter().for_each_init(
        || vec![0f32; GRAD_ROWS.min(n) * GRAD_COLS.min(k)],
        |scratch, p| {
            let k0 = p * GRAD_COLS;
            let kb = GRAD_COLS.min(k - k0);
            for (t, n0) in (0..n).step_by(GRAD_ROWS).enumerate() {
                let nb = GRAD_ROWS.min(n - n0);
                src.fill(n0, nb, k0, kb, &mut scratch[..nb * kb]);
                // SAFETY: task p writes only columns k0..k0+kb of g_x (disjoint across tasks); the
                // strides describe g_y [m, n] row-major, the tile [nb, kb] and g_x [m, k] row-major.
                unsafe {
                    gemm::gemm(
                        m,
                        kb,
                        nb,
                        gxp.get().add(k0),
                        1,
                        k as isize,
                        t > 0,
                        gy.as_ptr().add(n0),
                        1,
                        n as isize,
                        scratch.as_ptr(),
                        1,
                        kb as isize,
                        1.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        },
    );
}
