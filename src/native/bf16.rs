//! bf16 matrix products with f32 accumulation through AVX512-BF16 (`vdpbf16ps`, on AMD Zen 4/5
//! and Intel Cooper Lake / Sapphire Rapids and later): the weight is rounded to bf16 and packed
//! once at load, activations are rounded (nearest-even) when a product starts, and the sums,
//! bias, residual and activation stay f32 (what `torch.autocast(cpu, bfloat16)` computes for a
//! `Linear`). Used by the native engine's `Linear` layers under `--precision bf16`.

use super::amx;
use super::gemm::{Epilogue, GemmConfig};
use rayon::prelude::*;
use std::ops::Range;

/// Register tile: 8 rows x 32 columns (16 accumulators, two weight vectors, one broadcast).
const MR: usize = 8;
pub(crate) const NR: usize = 32;

/// Whether this CPU has the bf16 dot-product instructions.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // BW and VL for the bf16 outputs' masked 16-bit stores (every AVX512-BF16 CPU has them).
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The f32 products and, where this CPU has AVX512-BF16, the bf16 ones: what the models'
/// tests run on.
#[cfg(test)]
pub(crate) fn configs_to_test() -> Vec<super::gemm::GemmConfig> {
    let f32 = super::gemm::GemmConfig::detected();
    let mut configs = vec![f32];
    if supported() {
        configs.push(super::gemm::GemmConfig { bf16: true, ..f32 });
    }
    configs
}

/// `n` deterministic test values in [-1.6, 1.77), a different sequence per `seed`.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1013) as f32 / 300.0 - 1.6)
        .collect()
}

/// The bit patterns of `v`, for exact comparisons that show the first differing element.
#[cfg(test)]
pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `B [k, n]` in bf16: panels of 32 columns, each `[kp][32]` 32-bit words holding the
/// bf16 pair `(B[2p][j], B[2p + 1][j])` (low half first), the last panel and the depth padded
/// with zeros to `kp = 16 * ceil(k / 32)` pairs (whole 32-deep steps, what an AMX tile holds).
/// Carries the kernel family whose epilogue the products use and whether they run on AMX.
#[derive(Clone, Debug)]
pub struct Bf16Weight {
    k: usize,
    n: usize,
    /// What it was packed for (`amx`: whether the products run on AMX tiles).
    cfg: GemmConfig,
    data: Vec<u32>,
}

fn bf16_bits(v: f32) -> u32 {
    half::bf16::from_f32(v).to_bits() as u32
}

/// Panel `p` of `B[kk][j] = src[kk * rs + j * cs]` as bf16 pairs, element by element (the
/// weights' conversion at load); the depth padding is left as it is (zeros).
fn pack_panel(panel: &mut [u32], p: usize, src: &[f32], k: usize, n: usize, rs: usize, cs: usize) {
    for jj in 0..NR.min(n - p * NR) {
        let j = p * NR + jj;
        for q in 0..k.div_ceil(2) {
            let lo = bf16_bits(src[2 * q * rs + j * cs]);
            let hi = if 2 * q + 1 < k {
                bf16_bits(src[(2 * q + 1) * rs + j * cs])
            } else {
                0
            };
            panel[q * NR + jj] = lo | (hi << 16);
        }
    }
}

/// Pairs per packed row for a depth of `k`.
fn pairs(k: usize) -> usize {
    k.div_ceil(32) * 16
}

impl Bf16Weight {
    /// `B[kk][j] = src[kk * rs + j * cs]` for `kk < k`, `j < n`, for `cfg`'s epilogue and
    /// product (`cfg.amx`: AMX tiles, which the caller has checked are usable).
    pub fn new(cfg: GemmConfig, src: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        let kp = pairs(k);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * kp * NR];
        if k > 0 && n > 0 {
            assert!(
                src.len() > (k - 1) * rs + (n - 1) * cs,
                "bf16 weight too short"
            );
        }
        data.par_chunks_mut(kp * NR)
            .enumerate()
            .for_each(|(p, panel)| pack_panel(panel, p, src, k, n, rs, cs));
        Self {
            k,
            n,
            cfg: GemmConfig { bf16: true, ..cfg },
            data,
        }
    }

    /// A torch `Linear` weight `[out, in]` as `B = W^T`.
    pub fn from_linear_weight(cfg: GemmConfig, w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        Self::new(cfg, w, in_dim, out_dim, 1, in_dim)
    }

    /// An empty operand for `cfg`, for [`Self::repack`].
    pub fn empty(cfg: GemmConfig) -> Self {
        Self {
            k: 0,
            n: 0,
            cfg: GemmConfig { bf16: true, ..cfg },
            data: Vec::new(),
        }
    }

    /// Packs a new `B` (as [`Self::new`], for `cfg`) into this one's storage on this thread:
    /// attention's keys and values per head and image. Their bf16 rounding is the
    /// activations' (`vcvtne2ps2bf16`, as [`gemm`] rounds `a`), by whole vectors where `B`'s
    /// pairs or rows are contiguous in `src`.
    pub fn repack(
        &mut self,
        cfg: GemmConfig,
        src: &[f32],
        k: usize,
        n: usize,
        rs: usize,
        cs: usize,
    ) {
        assert!(supported(), "bf16 operands on a CPU without AVX512-BF16");
        if k > 0 && n > 0 {
            assert!(
                src.len() > (k - 1) * rs + (n - 1) * cs,
                "bf16 operand too short"
            );
        }
        self.reset(cfg, k, n);
        let kp = pairs(k);
        let mut col = vec![0u32; kp];
        for (p, panel) in self.data.chunks_mut(kp * NR).enumerate() {
            let width = NR.min(n - p * NR);
            // Safety (both): AVX512-BF16 asserted above; reads stay inside the bound checked
            // above (columns p*NR.., depth < k), writes inside the panel.
            #[cfg(target_arch = "x86_64")]
            if rs == 1 {
                // Column j's depth is contiguous: one packed row per column, transposed in.
                for jj in 0..width {
                    let j = p * NR + jj;
                    unsafe { x86::pack_row(&src[j * cs..j * cs + k], &mut col) };
                    for (q, &v) in col.iter().enumerate() {
                        panel[q * NR + jj] = v;
                    }
                }
                continue;
            } else if cs == 1 && width == NR {
                unsafe { x86::pack_row_pairs(&src[p * NR..], k, rs, panel) };
                continue;
            }
            pack_panel(panel, p, src, k, n, rs, cs);
        }
    }

    /// [`Self::repack`] from values already in bf16: `B[kk][j]` is half `kk` of column `j`,
    /// whose pairs are the words `src[j * rs..]` (`k` even): attention's keys, each key's
    /// values a run of pairs in the projection's bf16 rows, so each panel word is one word
    /// of one key.
    pub fn repack_pair_columns(
        &mut self,
        cfg: GemmConfig,
        src: &[u32],
        k: usize,
        n: usize,
        rs: usize,
    ) {
        assert!(k.is_multiple_of(2), "pair columns of odd depth {k}");
        let kq = k / 2;
        if kq > 0 && n > 0 {
            assert!(src.len() >= (n - 1) * rs + kq, "bf16 operand too short");
        }
        self.reset(cfg, k, n);
        let kp = pairs(k);
        // Whole 16-word runs through the 16 x 16 transpose (the words' bits only move).
        let done = if cfg!(target_arch = "x86_64") && supported() {
            kq - kq % 16
        } else {
            0
        };
        for (p, panel) in self.data.chunks_mut(kp * NR).enumerate() {
            let width = NR.min(n - p * NR);
            #[cfg(target_arch = "x86_64")]
            for q0 in (0..done).step_by(16) {
                for jj0 in (0..width).step_by(16) {
                    let s = src[(p * NR + jj0) * rs + q0..].as_ptr() as *const f32;
                    let d = panel[q0 * NR + jj0..].as_mut_ptr() as *mut f32;
                    let rows = (width - jj0).min(16);
                    // Safety: AVX-512 checked above; reads rows p*NR+jj0.. (< n) of 16 words
                    // from q0 + 16 <= kq, inside the bound checked above; writes 16 rows of
                    // 16 words at stride NR inside the panel (q0 + 16 <= kp, jj0 + 16 <= NR).
                    unsafe { super::gemm::transpose_16(s, rs, rows, d, NR, 0xFFFF) };
                }
            }
            for jj in 0..width {
                let col = &src[(p * NR + jj) * rs..][..kq];
                for (q, &w) in col.iter().enumerate().skip(done) {
                    panel[q * NR + jj] = w;
                }
            }
        }
    }

    /// [`Self::repack`] from rows of bf16 values: `B[kk][j] = src[kk * rs + j]` (halves):
    /// attention's values, each key a row, paired up two keys at a time.
    pub fn repack_half_rows(
        &mut self,
        cfg: GemmConfig,
        src: &[u16],
        k: usize,
        n: usize,
        rs: usize,
    ) {
        assert!(supported(), "bf16 operands on a CPU without AVX512-BF16");
        if k > 0 && n > 0 {
            assert!(src.len() >= (k - 1) * rs + n, "bf16 operand too short");
        }
        self.reset(cfg, k, n);
        let kp = pairs(k);
        for (p, panel) in self.data.chunks_mut(kp * NR).enumerate() {
            let j0 = p * NR;
            let width = NR.min(n - j0);
            #[cfg(target_arch = "x86_64")]
            if width == NR {
                // Safety: AVX512-BF16 asserted above; rows 0..k of 32 halves from j0 lie
                // inside the bound checked above, the writes inside the panel.
                unsafe { x86::pair_half_rows(&src[j0..], k, rs, panel) };
                continue;
            }
            for q in 0..k.div_ceil(2) {
                for jj in 0..width {
                    let lo = src[2 * q * rs + j0 + jj] as u32;
                    let hi = if 2 * q + 1 < k {
                        src[(2 * q + 1) * rs + j0 + jj] as u32
                    } else {
                        0
                    };
                    panel[q * NR + jj] = lo | (hi << 16);
                }
            }
        }
    }

    /// Empties this operand into a zeroed `[k, n]` one for `cfg`.
    fn reset(&mut self, cfg: GemmConfig, k: usize, n: usize) {
        (self.k, self.n, self.cfg) = (k, n, GemmConfig { bf16: true, ..cfg });
        self.data.clear();
        self.data.resize(n.div_ceil(NR) * pairs(k) * NR, 0);
    }

    /// Rows of packed activations a product over `m` rows reads: whole 32-row blocks on AMX
    /// (the rows past `m` zero).
    fn packed_rows(&self, m: usize) -> usize {
        if self.cfg.amx {
            m.next_multiple_of(amx::MB)
        } else {
            m
        }
    }

    /// Rows of the tile the products run in (an AMX block, or a register tile).
    pub fn row_tile(&self) -> usize {
        if self.cfg.amx {
            amx::MB
        } else {
            MR
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }
    pub fn n(&self) -> usize {
        self.n
    }
    /// The configuration the weight was packed for.
    pub fn config(&self) -> GemmConfig {
        self.cfg
    }
}

/// `c[i * ldc + (j - cols.start)] = epi(sum_kk bf16(a[i * lda + kk]) * B[kk][j])` for `i < m`,
/// `j` in `cols` (any start); the epilogue is the f32 kernels' arithmetic.
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
    parallel: bool,
) {
    if m == 0 || cols.is_empty() {
        return;
    }
    assert!(
        c.len() >= (m - 1) * ldc + cols.len(),
        "bf16 gemm: output too short"
    );
    // Safety: the output bound is checked above, the operands in gemm_ptr.
    unsafe { gemm_ptr(m, a, lda, b, cols, c.as_mut_ptr(), ldc, epi, parallel) }
}

/// [`gemm`] writing through a raw pointer; `parallel` spreads the column panels over rayon's
/// pool (inside a parallel loop pass false).
///
/// # Safety
/// `c` must be valid for writes at `i * ldc + j` for `i < m`, `j < cols.len()`, and nothing
/// else may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ptr(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &Bf16Weight,
    cols: Range<usize>,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    gemm_ptr_depth(m, a, lda, b, b.k, cols, c, ldc, epi, parallel)
}

/// [`gemm_ptr`] summing over the first `depth <= b.k()` rows of `b` only (each row of `a` is
/// read up to `depth` and taken as zero after it): causal attention.
///
/// # Safety
/// As [`gemm_ptr`], with `a` holding `(m - 1) * lda + depth` elements.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ptr_depth(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &Bf16Weight,
    depth: usize,
    cols: Range<usize>,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    gemm_out(m, a, lda, b, depth, cols, Out::f32(c), ldc, epi, parallel)
}

/// [`gemm_ptr_depth`] with each result rounded to bf16 as [`gemm_to_rows`] rounds it, written
/// as halves at `c16[i * ldc + j - cols.start]`: a product filling its columns of a
/// [`Bf16Rows`] ([`Bf16Rows::written`]), one attention head's values.
///
/// # Safety
/// As [`gemm_ptr_depth`], with `c16` and `ldc` counted in bf16 halves.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ptr_depth_to_bf16(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &Bf16Weight,
    depth: usize,
    cols: Range<usize>,
    c16: *mut u16,
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    gemm_out(
        m,
        a,
        lda,
        b,
        depth,
        cols,
        Out::bf16(c16),
        ldc,
        epi,
        parallel,
    )
}

/// [`gemm_ptr_depth`] on activations already in bf16 pairs: row `i`'s pair `q` at
/// `a[i * lda + q]` (`lda` words apart), summed over `depth` values: attention's queries read
/// in place out of the projection's bf16 rows ([`Bf16Rows::words`]).
///
/// # Safety
/// As [`gemm_ptr_depth`]; `a` holds what the tiles read: `(m - 1) * lda + depth.div_ceil(2)`
/// words, on AMX `(m.next_multiple_of(32) - 1) * lda` plus `depth` rounded up to 32 values
/// (checked), the rows past `m` and the pairs past `depth` read but their results dropped
/// (`b`'s depth padding is zero), so those words must be finite values.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_pairs_ptr(
    m: usize,
    a: &[u32],
    lda: usize,
    b: &Bf16Weight,
    depth: usize,
    cols: Range<usize>,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    if m == 0 || cols.is_empty() {
        return;
    }
    check(b, m, &cols, epi);
    products(m, a, lda, b, depth, cols, Out::f32(c), ldc, epi, parallel)
}

/// The checks every product makes: the kernel can run here, and the epilogue's operands
/// cover `m` rows of `cols`.
fn check(b: &Bf16Weight, m: usize, cols: &Range<usize>, epi: &Epilogue) {
    assert!(supported(), "bf16 gemm on a CPU without AVX512-BF16");
    // (Unit tests run the AMX path with the tiles' arithmetic in software where there is no AMX.)
    assert!(
        !b.cfg.amx || cfg!(test) || amx::enable(),
        "AMX products without the tile state"
    );
    assert!(cols.end <= b.n);
    if let Some(bias) = epi.bias {
        assert!(bias.len() >= cols.end);
    }
    if let Some((r, rs)) = epi.residual {
        assert!(r.len() >= (m - 1) * rs + cols.len());
    }
}

/// [`gemm_ptr_depth`] writing to `out` (f32 or bf16).
///
/// # Safety
/// As [`gemm_ptr_depth`], for `out`'s element type.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_out(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &Bf16Weight,
    depth: usize,
    cols: Range<usize>,
    out: Out,
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    if m == 0 || cols.is_empty() {
        return;
    }
    check(b, m, &cols, epi);
    assert!(depth <= b.k && a.len() >= (m - 1) * lda + depth);
    let kp = pairs(b.k);
    // AMX reads whole 32-row blocks: the rows past m are zeros.
    let rows = b.packed_rows(m);
    let run = |ap: &mut Vec<u32>| {
        // Every row below m is packed in full (padding included), so only AMX's rows past m
        // need zeros: zeroing the whole buffer cost 2% of a ViT-B-16 run.
        if ap.len() < rows * kp {
            ap.resize(rows * kp, 0);
        }
        ap[m * kp..rows * kp].fill(0);
        // The activations as bf16 pairs, row by row.
        let pack = |(i, row): (usize, &mut [u32])| {
            // Safety: AVX512-BF16 checked above; reads stay in row i's k values.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::pack_row(&a[i * lda..i * lda + depth], row)
            }
        };
        if parallel {
            ap[..m * kp].par_chunks_mut(kp).enumerate().for_each(pack);
        } else {
            ap[..m * kp].chunks_mut(kp).enumerate().for_each(pack);
        }
        // Safety: the caller's contract on c; ap holds the padded rows.
        unsafe { products(m, ap, kp, b, depth, cols.clone(), out, ldc, epi, parallel) };
    };
    if parallel {
        // A buffer of its own from the pool: while this thread waits in the parallel loop
        // rayon may run another product on it, which then takes another.
        let mut ap = SHARED_APACK
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        run(&mut ap);
        SHARED_APACK
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ap);
    } else {
        APACK.with(|buf| run(&mut buf.borrow_mut()));
    }
}

/// Where products write: f32 sums, or the same values rounded to bf16 (`vcvtneps2bf16`, as
/// [`gemm`] rounds its input), so that a packed operand of the next product is written
/// directly ([`gemm_to_rows`]).
#[derive(Clone, Copy)]
struct Out {
    f32: *mut f32,
    bf16: *mut u16,
}
// Safety: only a pair of addresses; [`products`]' callers own what they point to.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn f32(c: *mut f32) -> Self {
        Self {
            f32: c,
            bf16: std::ptr::null_mut(),
        }
    }

    fn bf16(c16: *mut u16) -> Self {
        Self {
            f32: std::ptr::null_mut(),
            bf16: c16,
        }
    }

    /// Both addresses at row `i` of `ldc` elements, the unused one staying null (by method,
    /// so closures capture the Send wrapper rather than its fields).
    fn row(self, i: usize, ldc: usize) -> (*mut f32, *mut u16) {
        if self.bf16.is_null() {
            (self.f32.wrapping_add(i * ldc), self.bf16)
        } else {
            (self.f32, self.bf16.wrapping_add(i * ldc))
        }
    }
}

/// The products of `m` packed rows `ap` (`lda` words apart, padded to whole 32-row blocks
/// for AMX) with `b`'s columns `cols`, summed over `depth`, through `epi` to `out` (`ldc`
/// elements a row, column `cols.start` first).
///
/// # Safety
/// `out` is valid for writes at `i * ldc + j` for `i < m`, `j < cols.len()`, and nothing
/// else accesses those elements during the call; AVX512-BF16 (and the tile state for an AMX
/// weight) checked by the caller; `ap` as above, `depth <= b.k`.
#[allow(clippy::too_many_arguments)]
unsafe fn products(
    m: usize,
    ap: &[u32],
    lda: usize,
    b: &Bf16Weight,
    depth: usize,
    cols: Range<usize>,
    out: Out,
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    let kp = pairs(b.k);
    assert!(depth <= b.k && lda >= depth.div_ceil(2));
    // What the tiles read: h rows of the summed pairs, or AMX's whole 32-row blocks of whole
    // 32-deep steps.
    let need = if b.cfg.amx {
        (m.next_multiple_of(amx::MB) - 1) * lda + pairs(depth)
    } else {
        (m - 1) * lda + depth.div_ceil(2)
    };
    assert!(ap.len() >= need, "bf16 products: packed rows too short");
    let first = cols.start / NR;
    let last = (cols.end - 1) / NR;
    let panel = |p: usize| {
        let lo = (p * NR).max(cols.start);
        let hi = ((p + 1) * NR).min(cols.end);
        let panel = &b.data[p * kp * NR..(p + 1) * kp * NR];
        // The output from row i0 (inside it: i0 < m).
        #[cfg(target_arch = "x86_64")]
        let dest = |i0: usize| {
            let (c, c16) = out.row(i0, ldc);
            x86::Dest {
                c,
                c16,
                ldc,
                c0: cols.start,
                i0,
                epi,
            }
        };
        if b.cfg.amx {
            let mut sums = [0f32; amx::MB * NR];
            // Safety: the weight was built for AMX only where the tile state was granted
            // (asserted by the callers); nothing between configure and release uses tiles.
            unsafe { amx::configure() };
            for i0 in (0..m).step_by(amx::MB) {
                let h = amx::MB.min(m - i0);
                // Safety: AMX granted; the block reads 32 rows of kp words from row i0
                // (padded) and the whole panel; the copy writes rows i0..i0+h, output columns
                // lo-cols.start..hi-cols.start through the epilogue, inside the output; panels
                // own disjoint columns.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    amx::block(
                        ap[i0 * lda..].as_ptr(),
                        lda,
                        panel.as_ptr(),
                        pairs(depth) / 16,
                        &mut sums,
                    );
                    x86::finish_block(&sums, h, p * NR, lo..hi, dest(i0));
                }
            }
            // Safety: as configure above.
            unsafe { amx::release() };
            return;
        }
        for i0 in (0..m).step_by(MR) {
            let h = MR.min(m - i0);
            // Safety: ISA checked; the tile writes rows i0..i0+h, output columns
            // lo-cols.start..hi-cols.start, inside the output (the caller's contract); panels
            // own disjoint columns.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::tile(
                    &ap[i0 * lda..],
                    lda,
                    depth.div_ceil(2),
                    h,
                    panel,
                    p * NR,
                    lo..hi,
                    dest(i0),
                );
            }
        }
    };
    if parallel {
        (first..=last).into_par_iter().for_each(panel);
    } else {
        (first..=last).for_each(panel);
    }
}

/// Activations already rounded to bf16 pairs for a product of depth `k`: `m` rows of
/// `pairs(k)` words, the packed layout [`gemm`] makes of its f32 input, zero past `k` and in
/// the rows up to a whole 32-row block (what AMX reads). Made by [`gemm_to_rows`], read by
/// [`gemm_rows`]: a product whose output only feeds another (the MLP's hidden layer) hands it
/// over in bf16, skipping a write and a read of it in f32 and the packing pass.
#[derive(Debug)]
pub struct Bf16Rows {
    m: usize,
    k: usize,
    data: Vec<u32>,
}

impl Bf16Rows {
    /// `m` rows of depth `k` computed in f32 by `fill(first_row, rows)` a chunk of
    /// `rows_per_task` rows at a time (in parallel; `rows` is a per-thread scratch of whole
    /// rows, which `fill` must write entirely) and rounded to pairs while still in cache: a
    /// row-wise op feeding a bf16 product (LayerNorm, LEFF's depthwise convolution) without
    /// its f32 output going through memory.
    pub fn build(
        m: usize,
        k: usize,
        rows_per_task: usize,
        fill: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Self {
        assert!(supported(), "bf16 rows on a CPU without AVX512-BF16");
        let kq = pairs(k);
        let rows = m.next_multiple_of(amx::MB);
        // Zeroed, so the padding rows are ready and no slice ever covers uninitialised words
        // (the rows below m are then overwritten whole by pack_row).
        let mut data = vec![0u32; rows * kq];
        let per = rows_per_task.max(1);
        data[..m * kq]
            .par_chunks_mut(per * kq)
            .enumerate()
            .for_each(|(t, out)| {
                thread_local! {
                    static SCRATCH: std::cell::RefCell<Vec<f32>> =
                        const { std::cell::RefCell::new(Vec::new()) };
                }
                SCRATCH.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    let h = out.len() / kq.max(1);
                    if buf.len() < h * k {
                        buf.resize(h * k, 0.0);
                    }
                    fill(t * per, &mut buf[..h * k]);
                    for (i, row) in out.chunks_mut(kq).enumerate() {
                        // Safety: AVX512-BF16 asserted above; the source is one row of k.
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            x86::pack_row(&buf[i * k..(i + 1) * k], row)
                        }
                    }
                })
            });
        Self { m, k, data }
    }

    /// `m` rows of depth `n` whose halves `0..n` of rows `0..m` `compute(c16, ldc)` writes
    /// (`ldc` halves a row, see [`gemm_ptr_depth_to_bf16`]); the padding is zeroed first.
    ///
    /// # Safety
    /// `compute` writes every one of those halves.
    pub unsafe fn written(m: usize, n: usize, compute: impl FnOnce(*mut u16, usize)) -> Self {
        new_rows(m, n, |out, ldc| compute(out.bf16, ldc))
    }

    pub fn m(&self) -> usize {
        self.m
    }
    pub fn k(&self) -> usize {
        self.k
    }
    /// The words of the rows (row `i`'s pair `q` at `i * self.stride() + q`), padding included.
    pub fn words(&self) -> &[u32] {
        &self.data
    }
    /// Words from one row to the next.
    pub fn stride(&self) -> usize {
        pairs(self.k)
    }
    /// [`Self::words`] as bf16 halves (value `c` of row `i` at `2 * i * self.stride() + c`).
    pub fn halves(&self) -> &[u16] {
        // Safety: the same bytes, viewed as twice as many 16-bit values (u16's alignment
        // divides u32's); x86 is little-endian, so a pair's low half (the even value) is first.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr() as *const u16, 2 * self.data.len()) }
    }
}

/// `epi(a @ B)` for `m` rows of `a` (`lda` apart) as [`Bf16Rows`] of depth `b.n()`: what
/// [`gemm`] computes, each output then rounded to bf16 as the next product's packing would.
pub fn gemm_to_rows(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &Bf16Weight,
    epi: &Epilogue,
    parallel: bool,
) -> Bf16Rows {
    // Safety: new_rows hands over an output of m rows of `ldc` halves.
    new_rows(m, b.n, |out, ldc| unsafe {
        gemm_out(m, a, lda, b, b.k, 0..b.n, out, ldc, epi, parallel)
    })
}

/// [`gemm_to_rows`] on rows already in bf16 pairs.
pub fn rows_to_rows(x: &Bf16Rows, b: &Bf16Weight, epi: &Epilogue, parallel: bool) -> Bf16Rows {
    assert_eq!(
        x.k, b.k,
        "bf16 rows of depth {} for a product of depth {}",
        x.k, b.k
    );
    let m = x.m;
    if m > 0 && b.n > 0 {
        check(b, m, &(0..b.n), epi);
    }
    // Safety: new_rows hands over an output of m rows of `ldc` halves; x's rows are padded
    // as products needs.
    new_rows(m, b.n, |out, ldc| unsafe {
        if m > 0 && b.n > 0 {
            products(
                m,
                &x.data,
                pairs(x.k),
                b,
                b.k,
                0..b.n,
                out,
                ldc,
                epi,
                parallel,
            )
        }
    })
}

/// [`Bf16Rows`] of `m` rows of depth `n` whose halves `0..n` of rows `0..m` `compute(out,
/// ldc)` writes (`ldc` halves a row); the padding is zeroed first.
fn new_rows(m: usize, n: usize, compute: impl FnOnce(Out, usize)) -> Bf16Rows {
    let kq = pairs(n);
    // One more block than whole blocks: AMX may read a 32-row block from any row below m
    // (attention's bands over one image's rows, [`gemm_pairs_ptr`]).
    let rows = m.next_multiple_of(amx::MB) + amx::MB;
    let mut data = Vec::<u32>::with_capacity(rows * kq);
    let p = data.as_mut_ptr();
    // Safety: all inside the capacity (rows * kq words). The words from n / 2 on (a half
    // left by an odd n included) and the rows past m are zeroed first and `compute` writes
    // the rest, so every word is written before set_len.
    unsafe {
        for i in 0..m {
            std::ptr::write_bytes(p.add(i * kq + n / 2), 0, kq - n / 2);
        }
        std::ptr::write_bytes(p.add(m * kq), 0, (rows - m) * kq);
        compute(Out::bf16(p as *mut u16), 2 * kq);
        data.set_len(rows * kq);
    }
    Bf16Rows { m, k: n, data }
}

/// `epi(x @ B)` over all of `b`'s columns into a new dense `[x.m(), b.n()]` buffer, `x`
/// already in bf16 pairs ([`gemm_to_rows`]).
pub fn gemm_rows(x: &Bf16Rows, b: &Bf16Weight, epi: &Epilogue, parallel: bool) -> Vec<f32> {
    assert_eq!(
        x.k, b.k,
        "bf16 rows of depth {} for a product of depth {}",
        x.k, b.k
    );
    let (m, n) = (x.m, b.n);
    let mut out = Vec::with_capacity(m * n);
    if m * n > 0 {
        check(b, m, &(0..n), epi);
        // Safety: the spare capacity holds m x n floats and the tiles write each of them
        // before any is read; the rows are padded as products needs.
        unsafe {
            products(
                m,
                &x.data,
                pairs(x.k),
                b,
                b.k,
                0..n,
                Out::f32(out.as_mut_ptr()),
                n,
                epi,
                parallel,
            );
            out.set_len(m * n);
        }
    }
    out
}

/// The packed activations of parallel products, kept between calls.
static SHARED_APACK: std::sync::Mutex<Vec<Vec<u32>>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    // The packed activations of this thread's serial products (nothing runs inside one),
    // reused across calls.
    static APACK: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Products through AMX against the same products through `vdpbf16ps`, on shapes with
/// partial row blocks, partial panels, odd depths and column ranges off the panel grid: Err
/// naming the first disagreement, or when AMX cannot run here. What `dev amx-probe` runs.
pub fn amx_self_test() -> Result<(), String> {
    if !supported() {
        return Err("no AVX512-BF16 to compare with".into());
    }
    if !amx::enable() {
        return Err("AMX not advertised or the tile state not granted".into());
    }
    amx_agreement()
}

/// [`amx_self_test`]'s comparison (the unit tests run it with the tiles emulated where the
/// CPU has no AMX): bias, residual and QuickGELU epilogue, parallel and serial, and the
/// attention's in-place read of the projection's rows.
fn amx_agreement() -> Result<(), String> {
    let base = GemmConfig {
        bf16: true,
        ..GemmConfig::detected()
    };
    let mut st = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        // bf16-exact values in [-2, 2), so both kernels sum the same products.
        half::bf16::from_f32(((st >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0).to_f32()
    };
    // (m, k, n, first column, summed depth): the last two are attention's shapes (values
    // over 197 keys, a causal band summing 77 of them).
    for &(m, k, n, c0, depth) in &[
        (1, 1, 1, 0, 1),
        (37, 70, 45, 0, 70),
        (64, 768, 96, 32, 768),
        (5, 33, 40, 7, 33),
        (100, 1000, 70, 3, 1000),
        (197, 64, 197, 0, 64),
        (32, 197, 64, 0, 77),
    ] {
        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let bias: Vec<f32> = (0..n).map(|_| next()).collect();
        let cn = n - c0;
        let res: Vec<f32> = (0..m * cn).map(|_| next()).collect();
        let epi = Epilogue {
            bias: Some(&bias),
            residual: Some((&res, cn)),
            act: super::gemm::Act::QuickGelu,
        };
        let run = |amx: bool, parallel: bool| {
            let b = Bf16Weight::from_linear_weight(GemmConfig { amx, ..base }, &w, n, k);
            let mut c = vec![f32::NAN; m * cn];
            // Safety: c holds m rows of cn = the columns asked for; a holds m rows of k.
            unsafe {
                gemm_ptr_depth(
                    m,
                    &a,
                    k,
                    &b,
                    depth,
                    c0..n,
                    c.as_mut_ptr(),
                    cn,
                    &epi,
                    parallel,
                )
            };
            c
        };
        agree(
            &run,
            &format!("{m}x{k}x{n} from column {c0}, depth {depth}"),
        )?;
    }
    // Attention's scores from queries read in place out of the q/k/v projection's bf16 rows
    // (`gemm_pairs_ptr`, a row stride of three heads' width): 77 rows, head 1's 64 values
    // against 77 keys. The rows are made once, so both routes read the same words.
    let (m, k, hd) = (77, 48, 64);
    let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
    let wp: Vec<f32> = (0..3 * 2 * hd * k).map(|_| next()).collect();
    let qkv = gemm_to_rows(
        m,
        &x,
        k,
        &Bf16Weight::from_linear_weight(base, &wp, 3 * 2 * hd, k),
        &Epilogue::NONE,
        false,
    );
    let keys: Vec<f32> = (0..m * hd).map(|_| next()).collect();
    let run = |amx: bool, parallel: bool| {
        let b = Bf16Weight::from_linear_weight(GemmConfig { amx, ..base }, &keys, m, hd);
        let mut c = vec![f32::NAN; m * m];
        // Safety: c holds m rows of the m columns asked for; the rows are padded for AMX's
        // whole blocks and are finite past head 1's values.
        unsafe {
            gemm_pairs_ptr(
                m,
                &qkv.words()[hd / 2..],
                qkv.stride(),
                &b,
                hd,
                0..m,
                c.as_mut_ptr(),
                m,
                &Epilogue::NONE,
                parallel,
            )
        };
        c
    };
    agree(&run, "queries read in place")
}

/// `run(amx, parallel)` on AMX, parallel and serial, against `run(false, true)`: Err naming
/// the first element further apart than the sums' order explains (or never written).
fn agree(run: &dyn Fn(bool, bool) -> Vec<f32>, what: &str) -> Result<(), String> {
    let want = run(false, true);
    for parallel in [true, false] {
        for (i, (g, w)) in run(true, parallel).iter().zip(&want).enumerate() {
            // NaN (an element never written) fails too.
            let close = (g - w).abs() <= 1e-4 * (1.0 + w.abs());
            if !close {
                return Err(format!(
                    "{what}: element {i} is {g} on AMX, {w} on AVX512-BF16"
                ));
            }
        }
    }
    Ok(())
}

/// One core's rate of bf16 dot products (`vdpbf16ps`) over its rate of 512-bit fp32 FMAs, in
/// FLOPs, measured once per process (the best of 7 alternating bursts of each, about 0.2 ms
/// apiece); None without AVX512-BF16. Not a fixed property of the instruction set: AMD Zen 4
/// runs `vdpbf16ps` at twice its FMA rate, while Intel's cores issue one every other cycle
/// against two FMAs a cycle (0.5: a Xeon family 6 model 207 whose hypervisor hides AMX), where
/// the bf16 products are slower than the fp32 ones.
pub fn rate_over_fp32() -> Option<f64> {
    static RATIO: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *RATIO.get_or_init(|| {
        if !supported() || !super::simd::Isa::Avx512.available() {
            return None;
        }
        let rate = |burst: &dyn Fn() -> f64| {
            let t = std::time::Instant::now();
            let flops = burst();
            flops / t.elapsed().as_secs_f64().max(1e-9)
        };
        let (mut dot, mut fma) = (0f64, 0f64);
        for _ in 0..7 {
            dot = dot.max(rate(&|| dot_burst(1 << 13)));
            fma = fma.max(rate(&|| {
                super::simd::fma_burst(super::simd::Isa::Avx512, 1 << 15)
            }));
        }
        (fma > 0.0).then(|| dot / fma)
    })
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
    use crate::native::gemm::finish512;
    use crate::native::gemm::Epilogue;
    use std::arch::x86_64::*;
    use std::ops::Range;

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

    /// One 32-column panel of pairs from rows of `src` (row stride `rs`, `k` rows, columns
    /// `0..32` contiguous): word `q * 32 + j` = `(src[2q][j], src[2q + 1][j])`, a missing odd
    /// last row as zero; `panel`'s words past the depth are left as they are.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn pack_row_pairs(src: &[f32], k: usize, rs: usize, panel: &mut [u32]) {
        assert!(k == 0 || src.len() >= (k - 1) * rs + NR);
        assert!(panel.len() >= k.div_ceil(2) * NR);
        let half = |row: usize, h: usize| -> __m512i {
            let v = _mm512_loadu_ps(src.as_ptr().add(row * rs + 16 * h));
            _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
                _mm512_cvtneps_pbh(v),
            ))
        };
        for q in 0..k.div_ceil(2) {
            for h in 0..2 {
                let mut w = half(2 * q, h);
                if 2 * q + 1 < k {
                    w = _mm512_or_si512(w, _mm512_slli_epi32::<16>(half(2 * q + 1, h)));
                }
                _mm512_storeu_si512(panel.as_mut_ptr().add(q * NR + 16 * h) as *mut _, w);
            }
        }
    }

    /// One 32-column panel of pairs from rows of bf16 halves (row stride `rs`, `k` rows,
    /// columns `0..32` contiguous): word `q * 32 + j` = `(src[2q][j], src[2q + 1][j])`, a
    /// missing odd last row as zero; [`pack_row_pairs`] without the rounding.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pair_half_rows(src: &[u16], k: usize, rs: usize, panel: &mut [u32]) {
        assert!(k == 0 || src.len() >= (k - 1) * rs + NR);
        assert!(panel.len() >= k.div_ceil(2) * NR);
        let half = |row: usize, h: usize| -> __m512i {
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(
                src.as_ptr().add(row * rs + 16 * h) as *const __m256i
            ))
        };
        for q in 0..k.div_ceil(2) {
            for h in 0..2 {
                let mut w = half(2 * q, h);
                if 2 * q + 1 < k {
                    w = _mm512_or_si512(w, _mm512_slli_epi32::<16>(half(2 * q + 1, h)));
                }
                _mm512_storeu_si512(panel.as_mut_ptr().add(q * NR + 16 * h) as *mut _, w);
            }
        }
    }

    /// One row of f32 as bf16 pairs (round to nearest even), zero from the last value to the
    /// end of `out` (at least `a.len().div_ceil(2)` words). The tail goes through the same
    /// conversion under masks: attention's probability rows end at any key, and a scalar
    /// tail there was most of this function's time.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn pack_row(a: &[f32], out: &mut [u32]) {
        let k = a.len();
        assert!(out.len() >= k.div_ceil(2), "bf16 row too short");
        let dst = out.as_mut_ptr();
        // (A macro, not a closure: the intrinsics stay inside this function's features.)
        macro_rules! convert {
            ($q:expr, $lo:expr, $hi:expr, $words:expr) => {{
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh($hi, $lo));
                let mask = ((1u32 << $words) - 1) as __mmask16;
                _mm512_mask_storeu_epi32(dst.add($q) as *mut _, mask, v);
            }};
        }
        let mut q = 0;
        while 2 * q + 32 <= k {
            let lo = _mm512_loadu_ps(a.as_ptr().add(2 * q));
            let hi = _mm512_loadu_ps(a.as_ptr().add(2 * q + 16));
            convert!(q, lo, hi, 16);
            q += 16;
        }
        let rest = k - 2 * q;
        if rest > 0 {
            let lanes = |n: usize| ((1u32 << n) - 1) as __mmask16;
            let lo = _mm512_maskz_loadu_ps(lanes(rest.min(16)), a.as_ptr().add(2 * q));
            let hi =
                _mm512_maskz_loadu_ps(lanes(rest.saturating_sub(16)), a.as_ptr().add(2 * q + 16));
            // The masked-off lanes load as zeros: an odd last pair's high half is zero.
            let words = 16.min(out.len() - q);
            convert!(q, lo, hi, words);
            q += words;
        }
        out[q..].fill(0);
    }

    /// Where a tile's sums go: `c` at the tile's first row (output row `i0`, row stride
    /// `ldc`), panel column `j` landing in output column `j - c0`, through `epi`.
    #[derive(Clone, Copy)]
    pub struct Dest<'a> {
        pub c: *mut f32,
        /// Where the outputs go rounded to bf16 instead, when not null (`c` is then unused).
        pub c16: *mut u16,
        pub ldc: usize,
        pub c0: usize,
        pub i0: usize,
        pub epi: &'a Epilogue<'a>,
    }

    /// Rows `0..h` of A (bf16 pairs, row stride `kp`, the first `kq` summed) times one
    /// 32-column panel (whose first column is `j0`); writes columns `cols` to `to`. One fully
    /// unrolled kernel per row count.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        a: &[u32],
        kp: usize,
        kq: usize,
        h: usize,
        panel: &[u32],
        j0: usize,
        cols: Range<usize>,
        to: Dest,
    ) {
        macro_rules! rows {
            ($($n:literal)*) => {
                match h {
                    $($n => tile_rows::<$n>(a, kp, kq, panel, j0, cols, to),)*
                    _ => unreachable!("tile of {h} rows"),
                }
            };
        }
        const _: () = assert!(MR == 8);
        rows!(1 2 3 4 5 6 7 8)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn tile_rows<const H: usize>(
        a: &[u32],
        kp: usize,
        kq: usize,
        panel: &[u32],
        j0: usize,
        cols: Range<usize>,
        to: Dest,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; H];
        let bp = panel.as_ptr();
        let ap = a.as_ptr();
        if H == MR && kq > 0 {
            // The full tile: the same sums in the same order, with each row's pair read by
            // the dot products themselves (see `sums_8x32`).
            let sums = sums_8x32(ap, kp, kq, bp);
            for (acc, sums) in acc.iter_mut().zip(sums) {
                *acc = sums;
            }
        } else {
            for q in 0..kq {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR) as *const _));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR + 16) as *const _));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*ap.add(r * kp + q) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (half, v) in acc.iter().enumerate() {
                store(*v, r, j0 + 16 * half, &cols, to);
            }
        }
    }

    /// The sums of an 8-row tile over `kq > 0` pairs: rows at `a` (row stride `kp` words)
    /// times the 32-column panel at `b`. Each row's pair is broadcast by the two `vdpbf16ps`
    /// that use it (`{1to16}` operands) rather than by a `vpbroadcastd` into a register, as
    /// the compiler writes it: in the encoders' order (a panel over every row block) the tile
    /// ran 4-8% faster that way on Zen 4 (docs/PERFORMANCE.md, session 21). The dot product
    /// is symmetric in its two sources, so the sums are the same to the bit.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn sums_8x32(a: *const u32, kp: usize, kq: usize, b: *const u32) -> [[__m512; 2]; MR] {
        const _: () = assert!(MR == 8 && NR == 32);
        let z = _mm512_setzero_ps();
        let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5, mut c6, mut c7) =
            (z, z, z, z, z, z, z, z);
        let (mut c8, mut c9, mut c10, mut c11, mut c12, mut c13, mut c14, mut c15) =
            (z, z, z, z, z, z, z, z);
        // Safety (the caller's): rows 0..8 hold kq words from `a` at stride kp, and the panel
        // kq steps of 32 words; kq > 0, so the counted loop ends.
        std::arch::asm!(
            "2:",
            "vmovups zmm30, [{b}]",
            "vmovups zmm31, [{b} + 64]",
            "vdpbf16ps {c0:z}, zmm30, dword ptr [{a0}]{{1to16}}",
            "vdpbf16ps {c1:z}, zmm31, dword ptr [{a0}]{{1to16}}",
            "vdpbf16ps {c2:z}, zmm30, dword ptr [{a0} + {ld}]{{1to16}}",
            "vdpbf16ps {c3:z}, zmm31, dword ptr [{a0} + {ld}]{{1to16}}",
            "vdpbf16ps {c4:z}, zmm30, dword ptr [{a0} + 2*{ld}]{{1to16}}",
            "vdpbf16ps {c5:z}, zmm31, dword ptr [{a0} + 2*{ld}]{{1to16}}",
            "vdpbf16ps {c6:z}, zmm30, dword ptr [{a3}]{{1to16}}",
            "vdpbf16ps {c7:z}, zmm31, dword ptr [{a3}]{{1to16}}",
            "vdpbf16ps {c8:z}, zmm30, dword ptr [{a4}]{{1to16}}",
            "vdpbf16ps {c9:z}, zmm31, dword ptr [{a4}]{{1to16}}",
            "vdpbf16ps {c10:z}, zmm30, dword ptr [{a4} + {ld}]{{1to16}}",
            "vdpbf16ps {c11:z}, zmm31, dword ptr [{a4} + {ld}]{{1to16}}",
            "vdpbf16ps {c12:z}, zmm30, dword ptr [{a4} + 2*{ld}]{{1to16}}",
            "vdpbf16ps {c13:z}, zmm31, dword ptr [{a4} + 2*{ld}]{{1to16}}",
            "vdpbf16ps {c14:z}, zmm30, dword ptr [{a7}]{{1to16}}",
            "vdpbf16ps {c15:z}, zmm31, dword ptr [{a7}]{{1to16}}",
            "add {a0}, 4",
            "add {a3}, 4",
            "add {a4}, 4",
            "add {a7}, 4",
            "add {b}, 128",
            "dec {n}",
            "jnz 2b",
            a0 = inout(reg) a => _,
            a3 = inout(reg) a.add(3 * kp) => _,
            a4 = inout(reg) a.add(4 * kp) => _,
            a7 = inout(reg) a.add(7 * kp) => _,
            ld = in(reg) kp * 4,
            b = inout(reg) b => _,
            n = inout(reg) kq => _,
            out("zmm30") _,
            out("zmm31") _,
            c0 = inout(zmm_reg) c0,
            c1 = inout(zmm_reg) c1,
            c2 = inout(zmm_reg) c2,
            c3 = inout(zmm_reg) c3,
            c4 = inout(zmm_reg) c4,
            c5 = inout(zmm_reg) c5,
            c6 = inout(zmm_reg) c6,
            c7 = inout(zmm_reg) c7,
            c8 = inout(zmm_reg) c8,
            c9 = inout(zmm_reg) c9,
            c10 = inout(zmm_reg) c10,
            c11 = inout(zmm_reg) c11,
            c12 = inout(zmm_reg) c12,
            c13 = inout(zmm_reg) c13,
            c14 = inout(zmm_reg) c14,
            c15 = inout(zmm_reg) c15,
            options(nostack, readonly),
        );
        [
            [c0, c1],
            [c2, c3],
            [c4, c5],
            [c6, c7],
            [c8, c9],
            [c10, c11],
            [c12, c13],
            [c14, c15],
        ]
    }

    /// Rows `0..h` of a 32-column block of sums (row stride 32, first column `j0`) through
    /// the epilogue to `to` (as [`tile`] writes): the AMX path's copy-out.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn finish_block(sums: &[f32], h: usize, j0: usize, cols: Range<usize>, to: Dest) {
        assert!(sums.len() >= h * NR);
        for r in 0..h {
            for half in 0..2 {
                let v = _mm512_loadu_ps(sums.as_ptr().add(r * NR + 16 * half));
                store(v, r, j0 + 16 * half, &cols, to);
            }
        }
    }

    /// Lanes of `v` (lane t is column `start + t`) whose columns lie in `cols`, with bias,
    /// residual and activation applied in registers, stored to row `r` of `to`. Applied before
    /// the store: reading back just-stored masked lanes would stall on store forwarding.
    #[inline(always)]
    unsafe fn store(v: __m512, r: usize, start: usize, cols: &Range<usize>, to: Dest) {
        let (a0, a1) = (start.max(cols.start), (start + 16).min(cols.end));
        if a0 >= a1 {
            return;
        }
        let mask = (((1u32 << (a1 - a0)) - 1) << (a0 - start)) as __mmask16;
        let i = to.i0 + r;
        // Masked-off lanes are not accessed, so their addresses may lie outside the slices.
        let bias = to
            .epi
            .bias
            .map(|b| _mm512_maskz_loadu_ps(mask, b.as_ptr().wrapping_add(start)));
        let res = to.epi.residual.map(|(res, rs)| {
            _mm512_maskz_loadu_ps(
                mask,
                res.as_ptr()
                    .wrapping_add(i * rs + start)
                    .wrapping_sub(to.c0),
            )
        });
        let v = finish512(v, bias, res, to.epi.act);
        if !to.c16.is_null() {
            _mm256_mask_storeu_epi16(
                to.c16
                    .add(r * to.ldc)
                    .wrapping_add(start)
                    .wrapping_sub(to.c0) as *mut i16,
                mask,
                std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v)),
            );
            return;
        }
        _mm512_mask_storeu_ps(
            to.c.add(r * to.ldc).wrapping_add(start).wrapping_sub(to.c0),
            mask,
            v,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::gemm::Act;

    /// Two products with the hidden rows handed over in bf16 pairs equal the same two
    /// through an f32 buffer, bit for bit, on the `vdpbf16ps` and the AMX path (tiles emulated
    /// where the CPU has none), parallel and serial: odd widths, rows off the blocks, the
    /// hand-over's padding zero.
    #[test]
    fn products_chained_in_bf16_rows_equal_the_f32_hand_over() {
        if !supported() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 rows not tested");
            return;
        }
        let vals = test_values;
        for &(m, k, h, n) in &[
            (37, 70, 45, 33),
            (64, 96, 128, 40),
            (5, 33, 64, 7),
            (1, 8, 3, 1),
        ] {
            let (a, w1, b1) = (vals(m * k, 1), vals(h * k, 2), vals(h, 3));
            let (w2, b2, res) = (vals(n * h, 4), vals(n, 5), vals(m * n, 6));
            let first = Epilogue::bias(Some(&b1), Act::Gelu);
            let second = Epilogue {
                bias: Some(&b2),
                residual: Some((&res, n)),
                act: Act::None,
            };
            for amx in [false, true] {
                let cfg = GemmConfig {
                    bf16: true,
                    amx,
                    ..GemmConfig::detected()
                };
                let p1 = Bf16Weight::from_linear_weight(cfg, &w1, h, k);
                let p2 = Bf16Weight::from_linear_weight(cfg, &w2, n, h);
                for parallel in [true, false] {
                    let mut hidden = vec![f32::NAN; m * h];
                    gemm(m, &a, k, &p1, 0..h, &mut hidden, h, &first, parallel);
                    let mut want = vec![f32::NAN; m * n];
                    gemm(m, &hidden, h, &p2, 0..n, &mut want, n, &second, parallel);
                    let rows = gemm_to_rows(m, &a, k, &p1, &first, parallel);
                    assert_eq!((rows.m(), rows.k()), (m, h));
                    // Past each row's h values and past row m: zeros.
                    let kq = pairs(h);
                    for (i, row) in rows.data.chunks(kq).enumerate() {
                        let halves = |q: usize| [row[q] & 0xffff, row[q] >> 16];
                        let live = if i < m { h } else { 0 };
                        for j in live..2 * kq {
                            assert_eq!(halves(j / 2)[j % 2], 0, "{m}x{k}x{h}: row {i} half {j}");
                        }
                    }
                    let got = gemm_rows(&rows, &p2, &second, parallel);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{m}x{k}x{h}x{n} amx {amx} parallel {parallel}"
                    );
                }
            }
        }
    }

    /// The AMX path (real tiles where the CPU has them, their arithmetic in software
    /// elsewhere) against the AVX512-BF16 kernel: row blocks, padding, copy-out, epilogue.
    #[test]
    fn amx_path_matches_the_avx512_kernel() {
        if !supported() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 gemm not tested");
            return;
        }
        if amx::enable() {
            eprintln!("AMX tiles tested on this CPU");
        }
        amx_agreement().unwrap();
    }

    /// `repack` (vector rounding where pairs or rows are contiguous) packs what `new` packs,
    /// and a depth-limited product never reads past its depth (NaN there) and equals the
    /// product over the truncated operands.
    #[test]
    fn repacked_and_depth_limited_operands_agree() {
        if !supported() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 operands not tested");
            return;
        }
        let cfg = GemmConfig::detected();
        let val = |i: usize| ((i * 7919 % 1009) as f32 / 250.0) - 2.0;
        let src: Vec<f32> = (0..200 * 150).map(val).collect();
        let mut re = Bf16Weight::empty(cfg);
        // Contiguous pairs (keys), contiguous rows with full and partial panels (values),
        // neither; odd and even depths.
        for (k, n, rs, cs) in [
            (64, 77, 1, 150),
            (33, 40, 1, 97),
            (77, 64, 150, 1),
            (50, 70, 150, 1),
            (9, 31, 150, 1),
            (15, 20, 3, 151),
        ] {
            re.repack(cfg, &src, k, n, rs, cs);
            let fresh = Bf16Weight::new(cfg, &src, k, n, rs, cs);
            assert_eq!((re.k, re.n), (k, n));
            assert!(re.data == fresh.data, "{k}x{n} rs {rs} cs {cs}");
        }
        let (m, k, n, depth) = (11, 40, 50, 27);
        let mut a: Vec<f32> = (0..m * k).map(|i| val(i + 3)).collect();
        let b = Bf16Weight::new(cfg, &src, k, n, 150, 1);
        let short: Vec<f32> = (0..m * depth)
            .map(|i| a[i / depth * k + i % depth])
            .collect();
        for i in 0..m {
            a[i * k + depth..(i + 1) * k].fill(f32::NAN);
        }
        let bs = Bf16Weight::new(cfg, &src, depth, n, 150, 1);
        let (mut got, mut want) = (vec![0f32; m * n], vec![0f32; m * n]);
        unsafe {
            gemm_ptr_depth(
                m,
                &a,
                k,
                &b,
                depth,
                0..n,
                got.as_mut_ptr(),
                n,
                &Epilogue::NONE,
                true,
            )
        };
        gemm(
            m,
            &short,
            depth,
            &bs,
            0..n,
            &mut want,
            n,
            &Epilogue::NONE,
            true,
        );
        assert!(got == want);
    }

    /// Against an f64 product of the same bf16-rounded operands, with every epilogue part and
    /// column ranges that do not start on a panel.
    /// `pack_row` rounds every length to the nearest-even pairs and zeroes the rest of the
    /// row: whole vectors, masked tails of both halves, odd lengths, rows longer than needed
    /// (filled with garbage first), values that round up, down and to even.
    #[test]
    fn pack_row_rounds_every_length_and_zeroes_the_padding() {
        if !supported() {
            eprintln!("no AVX512-BF16 on this CPU: pack_row not tested");
            return;
        }
        // 1 + 2^-8 (a tie, to even: down), 1 + 3 * 2^-8 (a tie: up), just over a tie.
        let ties = [
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            1.0 + 1.0 / 256.0 + 1e-6,
        ];
        for k in 0..100 {
            let mut a = test_values(k, k);
            for (v, t) in a.iter_mut().zip(ties.iter().cycle()).step_by(5) {
                *v = *t;
            }
            for len in [k.div_ceil(2), pairs(k), pairs(k) + 3] {
                let mut out = vec![0xdead_beefu32; len];
                // Safety: AVX512-BF16 checked above; out holds at least k / 2 pairs.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    x86::pack_row(&a, &mut out)
                };
                for (q, &w) in out.iter().enumerate() {
                    let half = |i: usize| a.get(i).map_or(0, |&v| bf16_bits(v));
                    assert_eq!(
                        w,
                        half(2 * q) | (half(2 * q + 1) << 16),
                        "k {k} len {len} word {q}"
                    );
                }
            }
        }
    }

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
            let b = Bf16Weight::from_linear_weight(GemmConfig::detected(), &w, n, k);
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
                gemm(m, &a, k, &b, cols.clone(), &mut c, cn, &epi, true);
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
