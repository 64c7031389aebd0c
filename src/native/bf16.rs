//! bf16 matrix products with f32 accumulation through AVX512-BF16 (`vdpbf16ps`, on AMD Zen 4/5
//! and Intel Cooper Lake / Sapphire Rapids and later): the weight is rounded to bf16 and packed
//! once at load, activations are rounded (nearest-even) when a product starts, and the sums,
//! bias, residual and activation stay f32 (what `torch.autocast(cpu, bfloat16)` computes for a
//! `Linear`). Used by the native engine's `Linear` layers under `--precision bf16`.

use super::gemm::{Epilogue, Isa};
use rayon::prelude::*;
use std::ops::Range;

/// Register tile: 8 rows x 32 columns (two 16-lane vectors).
const MR: usize = 8;
const NR: usize = 32;

/// Whether this CPU has the bf16 dot-product instructions.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `B [k, n]` in bf16: panels of 32 columns, each `[k / 2][32]` 32-bit words holding the
/// bf16 pair `(B[2p][j], B[2p + 1][j])` (low half first), the last panel and an odd k padded
/// with zeros.
#[derive(Clone, Debug)]
pub struct Bf16Weight {
    k: usize,
    n: usize,
    data: Vec<u32>,
}

fn bf16_bits(v: f32) -> u32 {
    half::bf16::from_f32(v).to_bits() as u32
}

impl Bf16Weight {
    /// A torch `Linear` weight `[out, in]` as `B = W^T`.
    pub fn from_linear_weight(w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        let (k, n) = (in_dim, out_dim);
        let kp = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * kp * NR];
        data.par_chunks_mut(kp * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for jj in 0..NR.min(n - p * NR) {
                    let row = &w[(p * NR + jj) * in_dim..(p * NR + jj + 1) * in_dim];
                    for q in 0..kp {
                        let lo = bf16_bits(row[2 * q]);
                        let hi = row.get(2 * q + 1).map_or(0, |&v| bf16_bits(v));
                        panel[q * NR + jj] = lo | (hi << 16);
                    }
                }
            });
        Self { k, n, data }
    }

    pub fn k(&self) -> usize {
        self.k
    }
    pub fn n(&self) -> usize {
        self.n
    }
}

/// `c[i * ldc + (j - cols.start)] = epi(sum_kk bf16(a[i * lda + kk]) * B[kk][j])` for `i < m`,
/// `j` in `cols`; the epilogue is the f32 kernels' (`isa`).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &Bf16Weight,
    cols: Range<usize>,
    c: &mut [f32],
    ldc: usize,
    epi: &Epilogue,
    isa: Isa,
) {
    if m == 0 || cols.is_empty() {
        return;
    }
    assert!(supported(), "bf16 gemm on a CPU without AVX512-BF16");
    assert!(cols.end <= b.n && a.len() >= (m - 1) * lda + b.k);
    assert!(
        c.len() >= (m - 1) * ldc + cols.len(),
        "bf16 gemm: output too short"
    );
    if let Some(bias) = epi.bias {
        assert!(bias.len() >= cols.end);
    }
    if let Some((r, rs)) = epi.residual {
        assert!(r.len() >= (m - 1) * rs + cols.len());
    }
    let kp = b.k.div_ceil(2);
    // The activations as bf16 pairs, row by row.
    let mut ap = vec![0u32; m * kp];
    ap.par_chunks_mut(kp).enumerate().for_each(|(i, row)| {
        // Safety: AVX512-BF16 checked above; reads stay in row i's k values.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::pack_row(&a[i * lda..i * lda + b.k], row)
        }
    });
    let first = cols.start / NR;
    let last = (cols.end - 1) / NR;
    let cptr = super::gemm::SendPtr(c.as_mut_ptr());
    (first..=last).into_par_iter().for_each(|p| {
        let lo = (p * NR).max(cols.start);
        let hi = ((p + 1) * NR).min(cols.end);
        let panel = &b.data[p * kp * NR..(p + 1) * kp * NR];
        let c = cptr.get();
        for i0 in (0..m).step_by(MR) {
            let h = MR.min(m - i0);
            // Safety: ISA checked; the tile writes rows i0..i0+h, output columns
            // lo-cols.start..hi-cols.start, inside c (asserted); panels own disjoint columns.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::tile(
                    &ap[i0 * kp..],
                    kp,
                    h,
                    panel,
                    p * NR,
                    lo,
                    hi,
                    c.add(i0 * ldc),
                    ldc,
                    cols.start,
                );
                super::gemm::epilogue(isa, c, ldc, i0, h, lo - cols.start, lo, hi - lo, epi);
            }
        }
    });
}

/// FLOPs of `steps` rounds of 12 independent `vdpbf16ps` (16 lanes x 2 products x 2), on
/// this thread; 0 without AVX512-BF16. For `bench`'s bf16 peak.
pub fn dot_burst(steps: usize) -> f64 {
    if !supported() {
        return 0.0;
    }
    // Safety: AVX512-BF16 checked above.
    #[cfg(target_arch = "x86_64")]
    std::hint::black_box(unsafe { x86::dot_burst(steps) });
    (steps * 12 * 16 * 4) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dot_burst(steps: usize) -> f32 {
        let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(std::hint::black_box(0x3f80_3f80)));
        let mut r = [_mm512_setzero_ps(); 12];
        for _ in 0..steps {
            for v in r.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, a, a);
            }
        }
        r.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    /// One row of f32 as bf16 pairs (round to nearest even), an odd tail padded with zero.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn pack_row(a: &[f32], out: &mut [u32]) {
        let k = a.len();
        let mut q = 0;
        while 2 * q + 32 <= k {
            let lo = _mm512_loadu_ps(a.as_ptr().add(2 * q));
            let hi = _mm512_loadu_ps(a.as_ptr().add(2 * q + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(out.as_mut_ptr().add(q) as *mut _, v);
            q += 16;
        }
        while q < out.len() {
            let l = super::bf16_bits(a[2 * q]);
            let h = a.get(2 * q + 1).map_or(0, |&v| super::bf16_bits(v));
            out[q] = l | (h << 16);
            q += 1;
        }
    }

    /// Rows `0..h` of A (bf16 pairs, row stride `kp`) times one 32-column panel (whose first
    /// column is `j0`); writes the sums of columns `lo..hi` to `c` (row stride `ldc`) at
    /// output column `j - c0`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        a: &[u32],
        kp: usize,
        h: usize,
        panel: &[u32],
        j0: usize,
        lo: usize,
        hi: usize,
        c: *mut f32,
        ldc: usize,
        c0: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let bp = panel.as_ptr();
        let ap = a.as_ptr();
        for q in 0..kp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR) as *const _));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR + 16) as *const _));
            for (r, acc) in acc.iter_mut().enumerate().take(h) {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*ap.add(r * kp + q) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }
        for (r, acc) in acc.iter().enumerate().take(h) {
            let row = c.add(r * ldc);
            for (half, v) in acc.iter().enumerate() {
                let start = j0 + 16 * half;
                let (a0, a1) = (start.max(lo), (start + 16).min(hi));
                if a0 >= a1 {
                    continue;
                }
                let mask = (((1u32 << (a1 - a0)) - 1) << (a0 - start)) as __mmask16;
                // Lane t of `v` is column start + t: store lanes a0-start..a1-start.
                _mm512_mask_storeu_ps(row.add(start).wrapping_sub(c0), mask, *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::gemm::Act;

    /// Against an f64 product of the same bf16-rounded operands, with every epilogue part and
    /// column ranges that do not start on a panel.
    #[test]
    fn matches_a_reference_on_rounded_operands() {
        if !supported() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 gemm not tested");
            return;
        }
        let r = |x: f32| half::bf16::from_f32(x).to_f32();
        for &(m, k, n) in &[(1, 1, 1), (9, 33, 40), (17, 64, 96), (3, 7, 70)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 37.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 41.0)
                .collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01).collect();
            let b = Bf16Weight::from_linear_weight(&w, n, k);
            for cols in [0..n, (n / 3)..n, 0..n.div_ceil(2)] {
                let cn = cols.len();
                if cn == 0 {
                    continue;
                }
                let res: Vec<f32> = (0..m * cn).map(|i| (i % 7) as f32 * 0.1).collect();
                let mut c = vec![f32::NAN; m * cn];
                let epi = Epilogue {
                    bias: Some(&bias),
                    residual: Some((&res, cn)),
                    act: Act::Relu,
                };
                gemm(
                    m,
                    &a,
                    k,
                    &b,
                    cols.clone(),
                    &mut c,
                    cn,
                    &epi,
                    Isa::detected(),
                );
                for i in 0..m {
                    for (jo, j) in cols.clone().enumerate() {
                        let s: f64 = (0..k)
                            .map(|kk| r(a[i * k + kk]) as f64 * r(w[j * k + kk]) as f64)
                            .sum();
                        let want = ((s as f32 + bias[j] + res[i * cn + jo]) as f64).max(0.0);
                        let got = c[i * cn + jo] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{m}x{k}x{n} {cols:?} ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
