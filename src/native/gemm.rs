//! Single-precision matrix multiply for the CPU encoders. Weights are packed once, at load,
//! into column panels of the kernel's width; activations are packed per cache block; a
//! register-tiled kernel (AVX-512, or AVX2 + FMA, picked at run time; portable Rust elsewhere)
//! computes each output tile, and the bias, the residual and the activation are applied to the
//! tile while it is still in L1. Strided operands are packed directly, so attention reads q, k
//! and v out of the fused projection without copies.

pub use super::simd::Isa;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// How the products run: the kernel family (chosen when the model is built), its cache
/// blocking and a tuning override for reading activations in place; all travel with each
/// packed operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmConfig {
    pub isa: Isa,
    /// `Some(true)`: read full row panels of A in place always; `Some(false)`: always pack
    /// them; `None`: by the number of column panels that share a packed block (measured best).
    pub direct_a: Option<bool>,
    /// Depth and rows of the cache blocks (speed only: see [`Blocking`]).
    pub blocking: Blocking,
    /// Weight products in bf16 with f32 accumulation (AVX512-BF16): what `weight::Weight`
    /// packs for.
    pub bf16: bool,
    /// Those bf16 products through AMX tiles (checked usable by the caller: `amx::enable`).
    pub amx: bool,
    /// How far ahead (in floats of the packed panel, 32 a depth step) the 14x32 kernel
    /// prefetches its panel of B; 0: not at all (speed only: see [`Isa::b_prefetch`]).
    pub prefetch: usize,
}

impl GemmConfig {
    /// The widest kernel this CPU runs, with the measured packing rule and blocking.
    pub fn detected() -> Self {
        Self::with_isa(Isa::detected())
    }

    /// `isa` where the CPU runs it (else the widest it does), with the measured packing rule
    /// and that family's blocking.
    pub fn with_isa(isa: Isa) -> Self {
        let isa = isa.or_detected();
        Self {
            isa,
            direct_a: None,
            // The default pool's size, without starting rayon's global pool here (a caller
            // may still configure it); the binary sets the blocking at the edge with the pool
            // it built.
            blocking: Blocking::default_for(
                isa,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            bf16: false,
            amx: false,
            prefetch: isa.b_prefetch(),
        }
    }
}

impl Default for GemmConfig {
    fn default() -> Self {
        Self::detected()
    }
}

/// Cache blocking of the FMA products: `kc`, the depth summed per pass over a block of the
/// output, and `mc`, the rows of A packed per block (rounded down to whole register tiles).
/// A speed setting only: a pass after the first starts its sums from the previous pass's
/// partial sums, so every output is one FMA chain over the whole depth in order and the
/// results are bit-identical for any blocking. That makes it safe to tune per CPU
/// (`--gemm-kc`, `--gemm-mc`; `scripts/tune_blocking.py` sweeps them on the encoders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub kc: usize,
    pub mc: usize,
}

impl Blocking {
    /// The family's defaults, measured on the development machines (AMD Zen 4, 2 threads,
    /// the encoders at batch 16). Deep on purpose: the encoders' outputs (M x N) do not fit
    /// in cache, and every extra depth pass re-reads and re-writes the whole output tile,
    /// which cost more than the deeper panels' L1 misses; with 1024 the 512- and 768-deep
    /// layers run in one pass with the epilogue in registers. ViT-B-32 on Zen 4: 24.4
    /// images/s at kc 1024, 21.5 at 512, 21.3 at 256 (mc 336); mc 210-336 within 1%, 112
    /// and 448 2-3% slower (docs/PERFORMANCE.md, session 11).
    pub const fn of(isa: Isa) -> Self {
        match isa {
            Isa::Avx512 => Self {
                kc: 1024,
                mc: 14 * 24,
            },
            Isa::Avx2 => Self {
                kc: 1024,
                mc: 6 * 24,
            },
            Isa::Generic => Self {
                kc: 256,
                mc: 4 * 32,
            },
        }
    }

    /// The family's default for `threads` worker threads on this machine: [`Self::of`] with
    /// the rows per block divided among the threads that share an L2 cache
    /// ([`Self::shared_by`]).
    pub fn default_for(isa: Isa, threads: usize) -> Self {
        Self::of(isa).shared_by(super::simd::threads_per_l2(threads), isa.mr())
    }

    /// The rows per block for `k` threads sharing one L2 cache (hardware threads of one core):
    /// `mc / k`, in whole `mr`-row tiles. The defaults were measured with one thread per L2,
    /// so each core's packed blocks keep the footprint measured best instead of growing k
    /// times past it.
    pub fn shared_by(self, k: usize, mr: usize) -> Self {
        if k <= 1 {
            return self;
        }
        Self {
            kc: self.kc,
            mc: (self.mc / k / mr * mr).max(mr),
        }
    }

    /// These settings with the given ones replacing them (each at least 1).
    pub fn with(self, kc: Option<usize>, mc: Option<usize>) -> Self {
        Self {
            kc: kc.unwrap_or(self.kc).max(1),
            mc: mc.unwrap_or(self.mc).max(1),
        }
    }
}

/// Register tiles of each kernel family.
impl Isa {
    /// Rows of a register tile.
    pub const fn mr(self) -> usize {
        match self {
            Isa::Avx512 => 14,
            Isa::Avx2 => 6,
            Isa::Generic => 4,
        }
    }
    /// Columns of a register tile (the width of a packed panel).
    pub const fn nr(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            Isa::Avx2 => 16,
            Isa::Generic => 16,
        }
    }

    /// The panel prefetch distance for this CPU ([`GemmConfig::prefetch`]): 12 depth steps
    /// ahead with AVX-512 on Intel, none elsewhere. Intel's two 512-bit FMA ports take a
    /// panel row every 14 cycles, twice Zen 4's rate, and without a prefetch the kernel waited
    /// on the panel's L2 loads (18% of its samples on a Xeon family 6 model 207); with it the
    /// fp32 encoders ran 1.02-1.18x as fast there (docs/PERFORMANCE.md, session 49). AMD's
    /// kernels reached 86-96% of peak without one and were not measured with it.
    pub fn b_prefetch(self) -> usize {
        match self {
            Isa::Avx512 if super::simd::is_intel() => 12 * 32,
            _ => 0,
        }
    }
}

/// `dst[..src.len()] = src`, a whole panel row (the kernels' widths, 32 or 16) as one
/// fixed-size copy: inline moves, not a `memcpy` call per row (the attention's values repack
/// 77 rows a head, and those calls were 0.6% of the text encoder's time).
fn copy_row(dst: &mut [f32], src: &[f32]) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) -> bool {
        match (<&mut [f32; N]>::try_from(dst), <&[f32; N]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    if !(fixed::<32>(dst, src) || fixed::<16>(dst, src)) {
        dst[..src.len()].copy_from_slice(src);
    }
}

/// A zeroed f32 buffer whose first element sits on a 64-byte boundary.
struct Aligned {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn zeros(len: usize) -> Self {
        let buf = vec![0f32; len + 16];
        let addr = buf.as_ptr() as usize;
        let off = ((64 - addr % 64) % 64) / 4;
        Self { buf, off, len }
    }
    fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Clone for Aligned {
    fn clone(&self) -> Self {
        let mut a = Aligned::zeros(self.len);
        a.as_mut_slice().copy_from_slice(self.as_slice());
        a
    }
}

impl std::fmt::Debug for Aligned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} floats)", self.len)
    }
}

/// The right-hand operand `B [k, n]` in panels of `nr` columns, each `[k][nr]` (the last
/// panel zero-padded).
#[derive(Clone, Debug)]
pub struct PackedB {
    cfg: GemmConfig,
    k: usize,
    n: usize,
    data: Aligned,
}

impl PackedB {
    /// Packs `B[kk][j] = src[kk * rs + j * cs]` for `cfg`'s kernel.
    pub fn new(cfg: GemmConfig, src: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        let mut b = Self::empty(cfg);
        b.repack(src, k, n, rs, cs);
        b
    }

    /// A torch `Linear` weight `[out, in]` as `B = W^T`, `[in, out]`.
    pub fn from_linear_weight(cfg: GemmConfig, w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        Self::new(cfg, w, in_dim, out_dim, 1, in_dim)
    }

    /// An empty operand for [`PackedB::repack`] to fill.
    pub fn empty(cfg: GemmConfig) -> Self {
        Self {
            cfg,
            k: 0,
            n: 0,
            data: Aligned::zeros(0),
        }
    }

    /// The same operand packed for `cfg`, keeping the storage when the kernel is the same.
    pub fn set_config(&mut self, cfg: GemmConfig) {
        if self.cfg.isa != cfg.isa {
            *self = Self::empty(cfg);
        }
        self.cfg = cfg;
    }

    /// Packs a new `B` (as [`PackedB::new`]) into this one's storage, growing it only when
    /// it is too small: the attention repacks keys and values per head and image.
    pub fn repack(&mut self, src: &[f32], k: usize, n: usize, rs: usize, cs: usize) {
        let nr = self.cfg.isa.nr();
        let panels = n.div_ceil(nr);
        let len = panels * k * nr;
        if self.data.buf.len() < len + 16 {
            self.data = Aligned::zeros(len);
        } else {
            self.data.len = len;
        }
        (self.k, self.n) = (k, n);
        // Columns of B that are contiguous rows of `src` (attention's keys): register
        // transposes (16x16 AVX-512, 8x8 AVX2) for whole blocks, element by element for the
        // rest.
        let block = match self.cfg.isa {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Generic => 1, // no transpose kernel
        };
        let transposed = cfg!(target_arch = "x86_64") && block > 1 && rs == 1 && cs != 1;
        let k_done = if transposed && n > 0 {
            assert!(src.len() >= (n - 1) * cs + k);
            k - k % block
        } else {
            0
        };
        let d = self.data.as_mut_slice();
        for p in 0..panels {
            let j0 = p * nr;
            let w = nr.min(n - j0);
            let panel = &mut d[p * k * nr..(p + 1) * k * nr];
            #[cfg(target_arch = "x86_64")]
            for kk0 in (0..k_done).step_by(block) {
                for jj0 in (0..nr).step_by(block) {
                    // Rows past `n` read as zero: the padding columns of the last panel.
                    let rows = w.saturating_sub(jj0).min(block);
                    let s = src.as_ptr().wrapping_add((j0 + jj0) * cs + kk0);
                    let dst = panel[kk0 * nr + jj0..].as_mut_ptr();
                    // Safety: the ISA was detected; reads stay inside rows
                    // j0 + jj0 + rows - 1 < n, columns < k (asserted; none when rows is 0);
                    // writes cover `block` rows of `block` at stride nr inside this panel
                    // (kk0 + block <= k, jj0 + block <= nr).
                    unsafe {
                        if block == 16 {
                            x86::transpose_16(s, cs, rows, dst, nr, 0xFFFF)
                        } else {
                            x86::transpose_8(s, cs, rows, dst, nr)
                        }
                    };
                }
            }
            for kk in k_done..k {
                let row = &mut panel[kk * nr..(kk + 1) * nr];
                if cs == 1 {
                    copy_row(row, &src[kk * rs + j0..kk * rs + j0 + w]);
                } else {
                    for (jj, v) in row[..w].iter_mut().enumerate() {
                        *v = src[kk * rs + (j0 + jj) * cs];
                    }
                }
                // The last panel's padding columns must be zero (the storage may be reused).
                row[w..].fill(0.0);
            }
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }
    pub fn n(&self) -> usize {
        self.n
    }
    pub fn isa(&self) -> Isa {
        self.cfg.isa
    }
    pub fn config(&self) -> GemmConfig {
        self.cfg
    }
}

/// The element-wise activation applied after bias and residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    QuickGelu,
    /// Torch's `nn.GELU` (erf), [`super::simd::gelu_erf`].
    Gelu,
    Relu,
    /// GELU's tanh approximation, [`super::simd::gelu_tanh`].
    GeluTanh,
}

/// What happens to each output element after the products are summed:
/// `c = act(sum + bias[j] + residual[i * stride + j])`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// Residual rows, and their stride, indexed like the output.
    pub residual: Option<(&'a [f32], usize)>,
    pub act: Act,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        residual: None,
        act: Act::None,
    };
}

impl<'a> Epilogue<'a> {
    pub fn bias(bias: Option<&'a [f32]>, act: Act) -> Self {
        Self {
            bias,
            residual: None,
            act,
        }
    }
}

/// An output pointer shared by parallel tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// By method, so closures capture the Send wrapper rather than the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    static APACK: RefCell<Aligned> = RefCell::new(Aligned::zeros(0));
}

/// `c[i * ldc + (j - cols.start)] = epi(sum_kk a[i * lda + kk] * B[kk][j])` for `i < m`,
/// `j` in `cols` (whose start must be a multiple of the panel width; use `0..b.n()` for all).
/// `parallel` spreads the blocks over rayon's pool; inside a parallel loop pass false.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    cols: Range<usize>,
    c: &mut [f32],
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    if m == 0 || cols.is_empty() {
        return;
    }
    check_operands(m, a, lda, b, &cols, epi);
    assert!(
        c.len() >= (m - 1) * ldc + cols.len(),
        "gemm: output too short"
    );
    // Safety: operands and output bounds checked above.
    unsafe { gemm_ptr(m, a, lda, b, cols, c.as_mut_ptr(), ldc, epi, parallel) }
}

/// Bounds every read of a product of `m > 0` rows over `cols`: panics (a programming error,
/// not bad input) when an operand is too short.
fn check_operands(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    cols: &Range<usize>,
    epi: &Epilogue,
) {
    assert!(cols.start.is_multiple_of(b.cfg.isa.nr()) && cols.start <= cols.end && cols.end <= b.n);
    assert!(a.len() >= (m - 1) * lda + b.k, "gemm: lhs too short");
    if let Some(bias) = epi.bias {
        assert!(bias.len() >= cols.end, "gemm: bias too short");
    }
    if let Some((r, rs)) = epi.residual {
        assert!(
            r.len() >= (m - 1) * rs + cols.len(),
            "gemm: residual too short"
        );
    }
}

/// [`gemm`] into a new dense `[m, cols.len()]` buffer (no zero-fill: every element is
/// written).
pub fn gemm_new(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    cols: Range<usize>,
    epi: &Epilogue,
    parallel: bool,
) -> Vec<f32> {
    let n = cols.len();
    let len = m * n;
    let mut out = Vec::<f32>::with_capacity(len);
    if len == 0 {
        return out;
    }
    check_operands(m, a, lda, b, &cols, epi);
    // Safety: the spare capacity holds `len` floats and gemm_ptr writes each of them once
    // before any is read.
    unsafe {
        gemm_ptr(m, a, lda, b, cols, out.as_mut_ptr(), n, epi, parallel);
        out.set_len(len);
    }
    out
}

/// [`gemm`] writing through a raw pointer, for callers whose tasks write disjoint columns of
/// shared rows (attention heads).
///
/// # Safety
/// `c` must be valid for writes at `i * ldc + j` for `i < m`, `j < cols.len()`, nothing else
/// may access those elements during the call, and `a` must hold `(m - 1) * lda + b.k()`
/// elements.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ptr(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    cols: Range<usize>,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    gemm_ptr_depth(m, a, lda, b, b.k, cols, c, ldc, epi, parallel)
}

/// [`gemm_ptr`] summing over the first `depth <= b.k()` rows of `b` only (the rest of each
/// row of `a` is treated as zero and not read): causal attention, whose probabilities are
/// zero past the query's own position.
///
/// # Safety
/// As [`gemm_ptr`], with `a` holding `(m - 1) * lda + depth` elements.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ptr_depth(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    depth: usize,
    cols: Range<usize>,
    c: *mut f32,
    ldc: usize,
    epi: &Epilogue,
    parallel: bool,
) {
    let isa = b.cfg.isa;
    let (mr, nr) = (isa.mr(), isa.nr());
    let blocking = b.cfg.blocking;
    let pf = b.cfg.prefetch;
    // `k` is the summed depth; `b.k` stays the panels' stride.
    let k = depth;
    let ncols = cols.len();
    if m == 0 || ncols == 0 {
        return;
    }
    assert!(
        k <= b.k
            && cols.start.is_multiple_of(nr)
            && cols.end <= b.n
            && a.len() >= (m - 1) * lda + k
    );
    if k == 0 {
        // Nothing to sum: the output is the epilogue of zero.
        for i in 0..m {
            std::ptr::write_bytes(c.add(i * ldc), 0, ncols);
        }
        epilogue(isa, c, ldc, 0, m, 0, cols.start, ncols, epi);
        return;
    }
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    // Row blocks in whole register panels, the same number for every thread and as equal as
    // the panel granularity allows, so no thread idles at the end; column blocks only when the
    // rows alone cannot feed the threads.
    let row_blocks = row_blocks(
        m,
        mr,
        blocking.mc,
        if m >= threads * mr * 4 { threads } else { 1 },
    );
    let mb = row_blocks.len();
    let mc = row_blocks.iter().map(|r| r.len()).max().unwrap_or(0);
    let panels = ncols.div_ceil(nr);
    let nb = if threads > 1 && mb < 2 * threads {
        (2 * threads).div_ceil(mb).min(panels)
    } else {
        1
    };
    let pb = panels.div_ceil(nb);
    let nb = panels.div_ceil(pb);
    let kblocks = k.div_ceil(blocking.kc);
    let kc = k.div_ceil(kblocks);

    let cptr = SendPtr(c);
    // The tiles of column panel `p` over `rows` for depth block `kb` (`kcb` deep), A read in
    // place up to `first_packed` and from the packed block at `abuf` after it. Safety of the
    // pointer arithmetic: the operand bounds asserted above and the caller's contract on `c`.
    let panel_tiles = |rows: &Range<usize>,
                       first_packed: usize,
                       abuf: *const f32,
                       kb: usize,
                       kcb: usize,
                       p: usize| {
        let k0 = kb * kc;
        let last = kb + 1 == kblocks;
        let j0 = p * nr;
        let w = nr.min(ncols - j0);
        let panel = (cols.start / nr + p) * b.k * nr + k0 * nr;
        let bptr = unsafe { b.data.as_slice().as_ptr().add(panel) };
        for i0 in rows.clone().step_by(mr) {
            let h = mr.min(rows.end - i0);
            let lhs = if i0 < first_packed {
                Lhs::Rows(unsafe { a.as_ptr().add(i0 * lda + k0) }, lda)
            } else {
                let q = (i0 - first_packed) / mr;
                Lhs::Packed(unsafe { abuf.add(q * mr * kcb) })
            };
            unsafe {
                let ct = cptr.get().add(i0 * ldc + j0);
                let full = h == mr && w == nr;
                // Full tiles get the epilogue in registers; edge tiles after.
                let te = (last && full).then(|| TileEpi {
                    bias: epi
                        .bias
                        .map_or(std::ptr::null(), |b| b.as_ptr().add(cols.start + j0)),
                    res: epi
                        .residual
                        .map_or(std::ptr::null(), |(r, rs)| r.as_ptr().add(i0 * rs + j0)),
                    res_stride: epi.residual.map_or(0, |(_, rs)| rs),
                    act: epi.act,
                });
                tile(isa, pf, kcb, lhs, bptr, ct, ldc, h, w, kb > 0, te.as_ref());
                if last && !full {
                    epilogue(isa, cptr.get(), ldc, i0, h, j0, cols.start + j0, w, epi);
                }
            }
        }
    };
    // Full row panels are read in place when few column panels would share the cost of
    // packing them; a partial last panel is always packed (padded).
    let first_packed = |rows: &Range<usize>, col_panels: usize| {
        if direct_a(b.cfg.direct_a, col_panels) {
            rows.start + (rows.len() / mr) * mr
        } else {
            rows.start
        }
    };
    let need = mc.div_ceil(mr) * mr * kc;

    // One depth block and several row blocks (the encoders' products at batch 16): blocks and
    // panels are shared at the end, so the thread that finishes first helps the other (the
    // VM's two cores run at slightly different speeds). Deeper products keep a fixed split:
    // a panel's depth blocks must run in order on one tile.
    if threads > 1 && nb == 1 && kblocks == 1 && mb > 1 {
        shared_blocks(
            mb,
            threads,
            panels,
            need,
            &|r, abuf| {
                let rows = &row_blocks[r];
                pack_a(
                    isa,
                    a,
                    lda,
                    first_packed(rows, panels)..rows.end,
                    0,
                    k,
                    abuf,
                );
            },
            &|r, abuf, p| {
                let rows = &row_blocks[r];
                panel_tiles(rows, first_packed(rows, panels), abuf, 0, k, p);
            },
        );
        return;
    }

    let task = |t: usize| {
        let (bi, bj) = (t / nb, t % nb);
        let rows = row_blocks[bi].clone();
        let pans = bj * pb..((bj + 1) * pb).min(panels);
        APACK.with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.len < need {
                *buf = Aligned::zeros(need);
            }
            let abuf = buf.as_mut_slice();
            let fp = first_packed(&rows, pans.len());
            for kb in 0..kblocks {
                let kcb = kc.min(k - kb * kc);
                pack_a(isa, a, lda, fp..rows.end, kb * kc, kcb, abuf);
                for p in pans.clone() {
                    panel_tiles(&rows, fp, abuf.as_ptr(), kb, kcb, p);
                }
            }
        });
    };
    let tasks = mb * nb;
    if threads > 1 && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Progress of one row block under [`shared_blocks`].
#[derive(Default)]
struct BlockState {
    /// Some thread packs (or has packed) this block.
    taken: std::sync::atomic::AtomicBool,
    /// Its packed rows, published once packing is done (null before).
    packed: std::sync::atomic::AtomicPtr<f32>,
    /// Next column panel to claim.
    next: std::sync::atomic::AtomicUsize,
}

/// Runs `mb` row blocks of `panels` column panels each on `threads` threads with the work
/// shared at the end: each thread takes its own share of blocks first (block `r` belongs to
/// thread `r * threads / mb`), then any block not yet taken; the taker packs it into its buffer
/// (`pack(r, buffer)`), publishes it and claims its column panels one at a time (`panel(r,
/// packed, p)`). A thread left with nothing to take claims the open panels of published blocks,
/// computing them with the taker's packed rows, instead of idling.
///
/// Nobody waits: a taker repacks its buffer only after taking another block, and it takes one
/// only after its current block's panels are all claimed; a thread claims others' panels only
/// once it has seen every block taken, so by then any block whose buffer was reused has no
/// panel left to claim.
fn shared_blocks(
    mb: usize,
    threads: usize,
    panels: usize,
    need: usize,
    pack: &(dyn Fn(usize, &mut [f32]) + Sync),
    panel: &(dyn Fn(usize, *const f32, usize) + Sync),
) {
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
    let state: Vec<BlockState> = (0..mb).map(|_| BlockState::default()).collect();
    let claim = |r: usize, abuf: *const f32| loop {
        let p = state[r].next.fetch_add(1, Relaxed);
        if p >= panels {
            break;
        }
        panel(r, abuf, p);
    };
    // Buffers other threads read must outlive every task of this call, so they come from a
    // pool and go back only at the end (a thread-local one could be reused by whatever job
    // the thread runs next while another thread still reads it).
    let used = std::sync::Mutex::new(Vec::with_capacity(threads));
    (0..threads).into_par_iter().for_each(|s| {
        let mut buf = {
            let mut pool = SHARED_PACK.lock().unwrap_or_else(|e| e.into_inner());
            pool.pop()
        }
        .filter(|b| b.len >= need)
        .unwrap_or_else(|| Aligned::zeros(need));
        // Other threads read the packed rows through this pointer, so the buffer is only
        // written (through a fresh slice) when none can (see above).
        let abuf = buf.as_mut_slice().as_mut_ptr();
        let own = (0..mb).filter(|&r| r * threads / mb == s);
        let rest = (0..mb).filter(|&r| r * threads / mb != s);
        for r in own.chain(rest) {
            if state[r].taken.swap(true, AcqRel) {
                continue;
            }
            // Safety: `need` floats at `abuf`, read by no other thread at this point.
            pack(r, unsafe { std::slice::from_raw_parts_mut(abuf, need) });
            state[r].packed.store(abuf, Release);
            claim(r, abuf);
        }
        used.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        // Every block is taken: help with the open panels of those already packed (one still
        // being packed is left to its taker).
        for (r, st) in state.iter().enumerate() {
            let abuf = st.packed.load(Acquire);
            if !abuf.is_null() {
                claim(r, abuf);
            }
        }
    });
    let used = used.into_inner().unwrap_or_else(|e| e.into_inner());
    SHARED_PACK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(used);
}

/// Packing buffers for [`shared_blocks`], kept between calls.
static SHARED_PACK: std::sync::Mutex<Vec<Aligned>> = std::sync::Mutex::new(Vec::new());

/// Splits `0..m` into `parts` shares of whole `mr`-row panels whose panel counts differ by at
/// most one (one share per thread: the blocks of a share run on one thread in the common case,
/// so unequal shares leave a thread idle at the end), each share cut into the same number of
/// blocks of at most `mc` rows, again as equal as panels allow. The last range may end
/// mid-panel at `m`.
fn row_blocks(m: usize, mr: usize, mc: usize, parts: usize) -> Vec<Range<usize>> {
    let panels = m.div_ceil(mr);
    let parts = parts.clamp(1, panels.max(1));
    let sub = panels.div_ceil(parts).div_ceil((mc / mr).max(1));
    let mut out = Vec::with_capacity(parts * sub);
    let mut p0 = 0;
    for part in 0..parts {
        let share = panels / parts + usize::from(part < panels % parts);
        for s in 0..sub {
            let n = share / sub + usize::from(s < share % sub);
            if n == 0 {
                continue;
            }
            out.push(p0 * mr..((p0 + n) * mr).min(m));
            p0 += n;
        }
    }
    out
}

/// Packs rows `rows` x columns `k0..k0 + kc` of `a` into micro-panels of `mr` rows, each
/// `[kc][mr]`, zero-padding the last.
fn pack_a(
    isa: Isa,
    a: &[f32],
    lda: usize,
    rows: Range<usize>,
    k0: usize,
    kc: usize,
    dst: &mut [f32],
) {
    let mr = isa.mr();
    let panels = rows.len().div_ceil(mr);
    assert!(dst.len() >= panels * mr * kc);
    assert!(rows.end == 0 || a.len() >= (rows.end - 1) * lda + k0 + kc);
    for (q, i0) in rows.clone().step_by(mr).enumerate() {
        let h = mr.min(rows.end - i0);
        // Safety: the asserts above bound every read (row < rows.end, column < k0 + kc)
        // and every write (q * mr * kc + kc * mr <= dst.len()).
        unsafe {
            let d = dst.as_mut_ptr().add(q * mr * kc);
            let s = a.as_ptr().add(i0 * lda + k0);
            if h == mr {
                let done = match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => x86::pack_14(s, lda, kc, d),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => x86::pack_6(s, lda, kc, d),
                    _ => 0,
                };
                // Column-outer for the rest: contiguous writes; the `mr` rows stay in L1.
                for kk in done..kc {
                    let dk = d.add(kk * mr);
                    for i in 0..mr {
                        *dk.add(i) = *s.add(i * lda + kk);
                    }
                }
            } else {
                for kk in 0..kc {
                    let dk = d.add(kk * mr);
                    for i in 0..mr {
                        *dk.add(i) = if i < h { *s.add(i * lda + kk) } else { 0.0 };
                    }
                }
            }
        }
    }
}

/// One output tile: `h` x `w` valid elements at `c`, continuing the partial sums there when
/// `acc`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    isa: Isa,
    pf: usize,
    kc: usize,
    a: Lhs,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    h: usize,
    w: usize,
    acc: bool,
    te: Option<&TileEpi>,
) {
    let (mr, nr) = (isa.mr(), isa.nr());
    if h == mr && w == nr {
        kernel(isa, pf, kc, a, b, c, ldc, acc, te);
        return;
    }
    // Edge tile: compute in full into scratch, starting from the valid part of the partial
    // sums when continuing, then copy the valid part out.
    // The kernel writes all mr x nr of it before anything is read, or reads all of it first
    // when continuing (zeros past the valid part).
    let mut tmp = std::mem::MaybeUninit::<[f32; 14 * 32]>::uninit();
    let tp = tmp.as_mut_ptr() as *mut f32;
    if acc {
        std::ptr::write_bytes(tp, 0, mr * nr);
        for i in 0..h {
            std::ptr::copy_nonoverlapping(c.add(i * ldc), tp.add(i * nr), w);
        }
    }
    kernel(isa, pf, kc, a, b, tp, nr, acc, None);
    debug_assert!(matches!(a, Lhs::Packed(_)) || h == mr);
    for i in 0..h {
        std::ptr::copy_nonoverlapping(tp.add(i * nr), c.add(i * ldc), w);
    }
}

/// The epilogue of one full tile, applied in registers: bias from `bias[0..nr]`, residual
/// rows at `res + i * res_stride` (null pointers for none).
struct TileEpi {
    bias: *const f32,
    res: *const f32,
    res_stride: usize,
    act: Act,
}

/// Where a tile's rows of A are: packed `[kc][mr]`, or in place (first row, row stride).
#[derive(Clone, Copy)]
enum Lhs {
    Packed(*const f32),
    Rows(*const f32, usize),
}

/// Whether full row panels are read in place rather than packed, given how many column
/// panels each packed block would serve; `forced` (the `--gemm-direct` tuning switch) decides
/// instead when set.
fn direct_a(forced: Option<bool>, col_panels: usize) -> bool {
    forced.unwrap_or(col_panels <= DIRECT_MAX_PANELS)
}

const DIRECT_MAX_PANELS: usize = 8;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    isa: Isa,
    pf: usize,
    kc: usize,
    a: Lhs,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    acc: bool,
    te: Option<&TileEpi>,
) {
    match (isa, a) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Lhs::Packed(a)) if pf > 0 => {
            x86::kernel_14x32::<false, true>(kc, a, 0, b, pf, c, ldc, acc, te)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Lhs::Packed(a)) => {
            x86::kernel_14x32::<false, false>(kc, a, 0, b, 0, c, ldc, acc, te)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Lhs::Rows(a, lda)) if pf > 0 => {
            x86::kernel_14x32::<true, true>(kc, a, lda, b, pf, c, ldc, acc, te)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Lhs::Rows(a, lda)) => {
            x86::kernel_14x32::<true, false>(kc, a, lda, b, 0, c, ldc, acc, te)
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Lhs::Packed(a)) => x86::kernel_6x16::<false>(kc, a, 0, b, c, ldc, acc, te),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Lhs::Rows(a, lda)) => x86::kernel_6x16::<true>(kc, a, lda, b, c, ldc, acc, te),
        _ => {
            kernel_generic(kc, a, b, c, ldc, acc);
            if let Some(t) = te {
                tile_epilogue_generic(c, ldc, Isa::Generic.mr(), Isa::Generic.nr(), t);
            }
        }
    }
}

unsafe fn tile_epilogue_generic(c: *mut f32, ldc: usize, h: usize, w: usize, t: &TileEpi) {
    for i in 0..h {
        for j in 0..w {
            let d = c.add(i * ldc + j);
            let mut v = *d;
            if !t.bias.is_null() {
                v += *t.bias.add(j);
            }
            if !t.res.is_null() {
                v += *t.res.add(i * t.res_stride + j);
            }
            *d = match t.act {
                Act::None => v,
                Act::Relu => v.max(0.0),
                Act::QuickGelu => v / (1.0 + super::simd::exp(-1.702 * v)),
                Act::Gelu => super::simd::gelu_erf(v),
                Act::GeluTanh => super::simd::gelu_tanh(v),
            };
        }
    }
}

unsafe fn kernel_generic(kc: usize, a: Lhs, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
    const MR: usize = Isa::Generic.mr();
    const NR: usize = Isa::Generic.nr();
    let mut r = [[0f32; NR]; MR];
    if acc {
        // Continue the previous pass's sums (see `Blocking`).
        for (i, row) in r.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = *c.add(i * ldc + j);
            }
        }
    }
    for p in 0..kc {
        let bv = std::slice::from_raw_parts(b.add(p * NR), NR);
        for (i, row) in r.iter_mut().enumerate() {
            let av = match a {
                Lhs::Packed(a) => *a.add(p * MR + i),
                Lhs::Rows(a, lda) => *a.add(i * lda + p),
            };
            for (x, &y) in row.iter_mut().zip(bv) {
                *x += av * y;
            }
        }
    }
    for (i, row) in r.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            *c.add(i * ldc + j) = v;
        }
    }
}

/// Applies the epilogue to rows `i0..i0 + h`, output columns `jo..jo + w` (`jb`: the same
/// first column's index into the bias, which covers all of B's columns).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn epilogue(
    isa: Isa,
    c: *mut f32,
    ldc: usize,
    i0: usize,
    h: usize,
    jo: usize,
    jb: usize,
    w: usize,
    epi: &Epilogue,
) {
    if epi.bias.is_none() && epi.residual.is_none() && epi.act == Act::None {
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::epilogue_avx512(c, ldc, i0, h, jo, jb, w, epi),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::epilogue_avx2(c, ldc, i0, h, jo, jb, w, epi),
        _ => epilogue_rows(c, ldc, i0, h, jo, jb, w, epi),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn epilogue_rows(
    c: *mut f32,
    ldc: usize,
    i0: usize,
    h: usize,
    jo: usize,
    jb: usize,
    w: usize,
    epi: &Epilogue,
) {
    for i in i0..i0 + h {
        let row = std::slice::from_raw_parts_mut(c.add(i * ldc + jo), w);
        if let Some(bias) = epi.bias {
            for (v, &b) in row.iter_mut().zip(&bias[jb..jb + w]) {
                *v += b;
            }
        }
        if let Some((r, rs)) = epi.residual {
            for (v, &x) in row.iter_mut().zip(&r[i * rs + jo..i * rs + jo + w]) {
                *v += x;
            }
        }
        match epi.act {
            Act::None => {}
            Act::Relu => {
                for v in row.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            Act::QuickGelu => {
                for v in row.iter_mut() {
                    *v /= 1.0 + super::simd::exp(-1.702 * *v);
                }
            }
            Act::Gelu => {
                for v in row.iter_mut() {
                    *v = super::simd::gelu_erf(*v);
                }
            }
            Act::GeluTanh => {
                for v in row.iter_mut() {
                    *v = super::simd::gelu_tanh(*v);
                }
            }
        }
    }
}

/// The epilogue's vector arithmetic, for the bf16 kernels' fused stores.
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::finish512;
/// The 16 x 16 transpose of 32-bit values (f32, or bf16 pairs moved as their bits).
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::transpose_16;

/// `unrolled!(i in 0 1 2 => { ... })`: the block once for each listed `i`, written out, so
/// the kernels' arrays of accumulators, indexed by `i`, stay in registers (a row loop LLVM
/// left rolled indexed them through a stack copy, zeroed by a memset per tile).
#[cfg(target_arch = "x86_64")]
macro_rules! unrolled {
    ($i:ident in $($n:literal)* => $body:block) => {{
        $({
            let $i: usize = $n;
            $body
        })*
    }};
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd::ERFC_FIT;
    use super::{Act, Epilogue, TileEpi};
    use std::arch::x86_64::*;

    // exp(x) = 2^n e^f as in `simd::exp`: n = round(x log2 e), f reduced with a two-part ln 2,
    // e^f from its degree-7 Taylor polynomial.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const TAYLOR: [f32; 8] = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];

    /// The epilogue's arithmetic on one vector, shared by full tiles (in registers) and edge
    /// tiles so a row's values are bit-identical in both: + bias, + residual, activation.
    #[inline(always)]
    pub(crate) unsafe fn finish512(
        v: __m512,
        bias: Option<__m512>,
        res: Option<__m512>,
        act: Act,
    ) -> __m512 {
        let v = bias.map_or(v, |b| _mm512_add_ps(v, b));
        let v = res.map_or(v, |r| _mm512_add_ps(v, r));
        match act {
            Act::None => v,
            Act::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
            Act::QuickGelu => gelu512(v),
            Act::Gelu => erf_gelu512(v),
            Act::GeluTanh => tanh_gelu512(v),
        }
    }

    /// [`finish512`] on 8 lanes.
    #[inline(always)]
    unsafe fn finish256(v: __m256, bias: Option<__m256>, res: Option<__m256>, act: Act) -> __m256 {
        let v = bias.map_or(v, |b| _mm256_add_ps(v, b));
        let v = res.map_or(v, |r| _mm256_add_ps(v, r));
        match act {
            Act::None => v,
            Act::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
            Act::QuickGelu => gelu256(v),
            Act::Gelu => erf_gelu256(v),
            Act::GeluTanh => tanh_gelu256(v),
        }
    }

    /// `exp` on 16 lanes (see the constants above).
    #[inline(always)]
    unsafe fn exp512(x: __m512) -> __m512 {
        let x = _mm512_max_ps(
            _mm512_min_ps(x, _mm512_set1_ps(88.0)),
            _mm512_set1_ps(-87.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), f);
        let mut p = _mm512_set1_ps(TAYLOR[0]);
        for &t in &TAYLOR[1..] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(t));
        }
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(p, _mm512_castsi512_ps(bits))
    }

    /// `exp` on 8 lanes.
    #[inline(always)]
    unsafe fn exp256(x: __m256) -> __m256 {
        let x = _mm256_max_ps(
            _mm256_min_ps(x, _mm256_set1_ps(88.0)),
            _mm256_set1_ps(-87.0),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let f = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let f = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), f);
        let mut p = _mm256_set1_ps(TAYLOR[0]);
        for &t in &TAYLOR[1..] {
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(t));
        }
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
    }

    /// QuickGELU, `v / (1 + exp(-1.702 v))`, on 16 lanes.
    #[inline(always)]
    unsafe fn gelu512(v: __m512) -> __m512 {
        let e = exp512(_mm512_mul_ps(v, _mm512_set1_ps(-1.702)));
        _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0), e))
    }

    /// QuickGELU on 8 lanes.
    #[inline(always)]
    unsafe fn gelu256(v: __m256) -> __m256 {
        let e = exp256(_mm256_mul_ps(v, _mm256_set1_ps(-1.702)));
        _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }

    /// [`super::super::simd::gelu_tanh`] on 16 lanes: `x / (1 + e^(-2u))`.
    #[inline(always)]
    unsafe fn tanh_gelu512(v: __m512) -> __m512 {
        let c = _mm512_set1_ps(-2.0 * super::super::simd::SQRT_2_OVER_PI);
        let x3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
        let inner = _mm512_fmadd_ps(x3, _mm512_set1_ps(0.044715), v);
        let e = exp512(_mm512_mul_ps(inner, c));
        _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0), e))
    }

    /// [`tanh_gelu512`] on 8 lanes.
    #[inline(always)]
    unsafe fn tanh_gelu256(v: __m256) -> __m256 {
        let c = _mm256_set1_ps(-2.0 * super::super::simd::SQRT_2_OVER_PI);
        let x3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
        let inner = _mm256_fmadd_ps(x3, _mm256_set1_ps(0.044715), v);
        let e = exp256(_mm256_mul_ps(inner, c));
        _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }

    /// [`super::super::simd::gelu_erf`] on 16 lanes (Horner and `p - z^2` fused).
    #[inline(always)]
    unsafe fn erf_gelu512(v: __m512) -> __m512 {
        let (one, half) = (_mm512_set1_ps(1.0), _mm512_set1_ps(0.5));
        let z = _mm512_abs_ps(_mm512_mul_ps(
            v,
            _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
        ));
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(z, half, one));
        let mut p = _mm512_set1_ps(ERFC_FIT[9]);
        for &c in ERFC_FIT[..9].iter().rev() {
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
        }
        let erfc = _mm512_mul_ps(t, exp512(_mm512_fnmadd_ps(z, z, p)));
        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
        let one_plus_erf =
            _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(2.0), erfc), erfc);
        _mm512_mul_ps(_mm512_mul_ps(half, v), one_plus_erf)
    }

    /// [`super::super::simd::gelu_erf`] on 8 lanes.
    #[inline(always)]
    unsafe fn erf_gelu256(v: __m256) -> __m256 {
        let (one, half) = (_mm256_set1_ps(1.0), _mm256_set1_ps(0.5));
        let z = _mm256_andnot_ps(
            _mm256_set1_ps(-0.0),
            _mm256_mul_ps(v, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2)),
        );
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(z, half, one));
        let mut p = _mm256_set1_ps(ERFC_FIT[9]);
        for &c in ERFC_FIT[..9].iter().rev() {
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
        }
        let erfc = _mm256_mul_ps(t, exp256(_mm256_fnmadd_ps(z, z, p)));
        let negative = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps());
        let one_plus_erf =
            _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0), erfc), erfc, negative);
        _mm256_mul_ps(_mm256_mul_ps(half, v), one_plus_erf)
    }

    /// Packs 14 rows (stride `lda`) into `[k][14]` for as many whole 16-column blocks as
    /// `kc` holds, by 16x16 register transposes (rows 14 and 15 zero); returns the columns done.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_14(s: *const f32, lda: usize, kc: usize, d: *mut f32) -> usize {
        let blocks = kc / 16;
        for blk in 0..blocks {
            let k = blk * 16;
            transpose_16(s.add(k), lda, 14, d.add(k * 14), 14, 0x3FFF);
        }
        blocks * 16
    }

    /// Transposes `rows` (<= 16) rows of 16 floats at `s` (row stride `lda`; missing rows read
    /// as zero): column `c` goes, as one vector of 16 row values, to `d + c * ldd` under `mask`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose_16(
        s: *const f32,
        lda: usize,
        rows: usize,
        d: *mut f32,
        ldd: usize,
        mask: u16,
    ) {
        // Written out with constant indices, so the rows stay in registers: a loop over
        // `rows` kept them in a stack array, and the loads stalled behind its stores.
        let mut r = [_mm512_setzero_ps(); 16];
        unrolled!(i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 => {
            if i < rows {
                r[i] = _mm512_loadu_ps(s.add(i * lda));
            }
        });
        // Pairs of rows interleaved, then pairs of pairs: each 128-bit lane L of u[4i + q]
        // holds column 4L + q of rows 4i..4i + 4.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let (a0, a1, a2, a3) = (
                _mm512_castps_pd(t[4 * i]),
                _mm512_castps_pd(t[4 * i + 1]),
                _mm512_castps_pd(t[4 * i + 2]),
                _mm512_castps_pd(t[4 * i + 3]),
            );
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
        }
        // Gather lane L of u[q], u[4 + q], u[8 + q], u[12 + q]: column 4L + q, all rows.
        for q in 0..4 {
            let lo_a = _mm512_shuffle_f32x4::<0x44>(u[q], u[4 + q]);
            let lo_b = _mm512_shuffle_f32x4::<0x44>(u[8 + q], u[12 + q]);
            let hi_a = _mm512_shuffle_f32x4::<0xEE>(u[q], u[4 + q]);
            let hi_b = _mm512_shuffle_f32x4::<0xEE>(u[8 + q], u[12 + q]);
            let cols = [
                _mm512_shuffle_f32x4::<0x88>(lo_a, lo_b),
                _mm512_shuffle_f32x4::<0xDD>(lo_a, lo_b),
                _mm512_shuffle_f32x4::<0x88>(hi_a, hi_b),
                _mm512_shuffle_f32x4::<0xDD>(hi_a, hi_b),
            ];
            for (l, c) in cols.iter().enumerate() {
                _mm512_mask_storeu_ps(d.add((4 * l + q) * ldd), mask, *c);
            }
        }
    }

    /// The 8x8 transpose of rows `r`: element `c` of the result's vector `i` is `r[c][i]`.
    #[inline(always)]
    unsafe fn transpose_8x8(r: &[__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// Packs 6 rows into `[k][6]` by 8x8 transposes (rows 6 and 7 zero); returns the columns
    /// done.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pack_6(s: *const f32, lda: usize, kc: usize, d: *mut f32) -> usize {
        let blocks = kc / 8;
        for blk in 0..blocks {
            let k = blk * 8;
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, ri) in r.iter_mut().enumerate().take(6) {
                *ri = _mm256_loadu_ps(s.add(i * lda + k));
            }
            let cols = transpose_8x8(&r);
            // Full 8-wide stores, each overrun of 2 rewritten by the next column's store:
            // vmaskmovps stores are microcoded on AMD cores. The last column stores 4 + 2
            // so nothing lands past this block.
            for (j, c) in cols.iter().enumerate().take(7) {
                _mm256_storeu_ps(d.add((k + j) * 6), *c);
            }
            let last = d.add((k + 7) * 6);
            _mm_storeu_ps(last, _mm256_castps256_ps128(cols[7]));
            _mm_store_sd(
                last.add(4) as *mut f64,
                _mm_castps_pd(_mm256_extractf128_ps::<1>(cols[7])),
            );
        }
        blocks * 8
    }

    /// Transposes `rows` (<= 8) rows of 8 floats at `s` (row stride `lda`; missing rows read
    /// as zero): column `c` goes, as one vector of 8 row values, to `d + c * ldd`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transpose_8(s: *const f32, lda: usize, rows: usize, d: *mut f32, ldd: usize) {
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, ri) in r.iter_mut().enumerate().take(rows) {
            *ri = _mm256_loadu_ps(s.add(i * lda));
        }
        for (c, v) in transpose_8x8(&r).iter().enumerate() {
            _mm256_storeu_ps(d.add(c * ldd), *v);
        }
    }

    /// 14 rows x 32 columns: 28 zmm accumulators, two loads of B and 14 broadcasts of A per
    /// step of k; with `PREFETCH`, B's two lines `pf` floats ahead are prefetched each step
    /// (past the panel's end they are the next panel's first, which the next tile reads).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel_14x32<const ROWS: bool, const PREFETCH: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        pf: usize,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        te: Option<&TileEpi>,
    ) {
        // The first depth step initialises the sums (kc >= 1: gemm_ptr returns early on an
        // empty depth), or a later pass continues from the sums stored so far, so the depth
        // is one FMA chain however it is blocked. Starting from zeros instead made LLVM zero
        // a stack copy of all 28 registers with a memset call per tile.
        debug_assert!(kc > 0);
        // Every row loop is written out (`unrolled!`) so the 28 sums stay in registers.
        let mut r = [_mm512_setzero_ps(); 28];
        let (mut a, mut b, steps) = if acc {
            unrolled!(i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 => {
                r[2 * i] = _mm512_loadu_ps(c.add(i * ldc));
                r[2 * i + 1] = _mm512_loadu_ps(c.add(i * ldc + 16));
            });
            (a, b, kc)
        } else {
            let (b0, b1) = (_mm512_load_ps(b), _mm512_load_ps(b.add(16)));
            unrolled!(i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 => {
                let x = _mm512_set1_ps(*a.add(if ROWS { i * lda } else { i }));
                r[2 * i] = _mm512_mul_ps(x, b0);
                r[2 * i + 1] = _mm512_mul_ps(x, b1);
            });
            (a.add(if ROWS { 1 } else { 14 }), b.add(32), kc - 1)
        };
        for _ in 0..steps {
            let b0 = _mm512_load_ps(b);
            let b1 = _mm512_load_ps(b.add(16));
            if PREFETCH {
                // A hint only: an address past the buffer is never dereferenced.
                let ahead = b.wrapping_add(pf) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            }
            unrolled!(i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 => {
                let x = _mm512_set1_ps(*a.add(if ROWS { i * lda } else { i }));
                r[2 * i] = _mm512_fmadd_ps(x, b0, r[2 * i]);
                r[2 * i + 1] = _mm512_fmadd_ps(x, b1, r[2 * i + 1]);
            });
            a = a.add(if ROWS { 1 } else { 14 });
            b = b.add(32);
        }
        match te {
            Some(t) => {
                let at =
                    |p: *const f32, o: usize| (!p.is_null()).then(|| _mm512_loadu_ps(p.add(o)));
                let (bias0, bias1) = (at(t.bias, 0), at(t.bias, 16));
                unrolled!(i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 => {
                    let row = c.add(i * ldc);
                    let rr = if t.res.is_null() {
                        t.res
                    } else {
                        t.res.add(i * t.res_stride)
                    };
                    let v0 = finish512(r[2 * i], bias0, at(rr, 0), t.act);
                    let v1 = finish512(r[2 * i + 1], bias1, at(rr, 16), t.act);
                    _mm512_storeu_ps(row, v0);
                    _mm512_storeu_ps(row.add(16), v1);
                });
            }
            None => unrolled!(i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 => {
                let row = c.add(i * ldc);
                _mm512_storeu_ps(row, r[2 * i]);
                _mm512_storeu_ps(row.add(16), r[2 * i + 1]);
            }),
        }
    }

    /// 6 rows x 16 columns: 12 ymm accumulators.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel_6x16<const ROWS: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
        te: Option<&TileEpi>,
    ) {
        // Row loops written out, as in `kernel_14x32`.
        let mut r = [_mm256_setzero_ps(); 12];
        if acc {
            // Continue the previous pass's sums (see `Blocking`).
            unrolled!(i in 0 1 2 3 4 5 => {
                r[2 * i] = _mm256_loadu_ps(c.add(i * ldc));
                r[2 * i + 1] = _mm256_loadu_ps(c.add(i * ldc + 8));
            });
        }
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_load_ps(b);
            let b1 = _mm256_load_ps(b.add(8));
            unrolled!(i in 0 1 2 3 4 5 => {
                let x = _mm256_broadcast_ss(&*a.add(if ROWS { i * lda } else { i }));
                r[2 * i] = _mm256_fmadd_ps(x, b0, r[2 * i]);
                r[2 * i + 1] = _mm256_fmadd_ps(x, b1, r[2 * i + 1]);
            });
            a = a.add(if ROWS { 1 } else { 6 });
            b = b.add(16);
        }
        match te {
            Some(t) => {
                let at =
                    |p: *const f32, o: usize| (!p.is_null()).then(|| _mm256_loadu_ps(p.add(o)));
                let (bias0, bias1) = (at(t.bias, 0), at(t.bias, 8));
                unrolled!(i in 0 1 2 3 4 5 => {
                    let row = c.add(i * ldc);
                    let rr = if t.res.is_null() {
                        t.res
                    } else {
                        t.res.add(i * t.res_stride)
                    };
                    _mm256_storeu_ps(row, finish256(r[2 * i], bias0, at(rr, 0), t.act));
                    _mm256_storeu_ps(row.add(8), finish256(r[2 * i + 1], bias1, at(rr, 8), t.act));
                });
            }
            None => unrolled!(i in 0 1 2 3 4 5 => {
                let row = c.add(i * ldc);
                _mm256_storeu_ps(row, r[2 * i]);
                _mm256_storeu_ps(row.add(8), r[2 * i + 1]);
            }),
        }
    }

    /// The edge tiles' epilogue in the full tiles' arithmetic (bias, then residual, then the
    /// same vector activation) on masked vectors: a row's values must not depend on whether it
    /// fell in a full or an edge tile, which the batch size and the thread split decide.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn epilogue_avx512(
        c: *mut f32,
        ldc: usize,
        i0: usize,
        h: usize,
        jo: usize,
        jb: usize,
        w: usize,
        epi: &Epilogue,
    ) {
        for i in i0..i0 + h {
            let row = c.add(i * ldc + jo);
            for j in (0..w).step_by(16) {
                let m = ((1u32 << (w - j).min(16)) - 1) as __mmask16;
                let v = finish512(
                    _mm512_maskz_loadu_ps(m, row.add(j)),
                    epi.bias
                        .map(|b| _mm512_maskz_loadu_ps(m, b.as_ptr().add(jb + j))),
                    epi.residual
                        .map(|(r, rs)| _mm512_maskz_loadu_ps(m, r.as_ptr().add(i * rs + jo + j))),
                    epi.act,
                );
                _mm512_mask_storeu_ps(row.add(j), m, v);
            }
        }
    }

    /// [`epilogue_avx512`] for the AVX2 kernel: 8 lanes, through a padded copy (edge tiles
    /// only; masked stores are microcoded on AMD cores).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn epilogue_avx2(
        c: *mut f32,
        ldc: usize,
        i0: usize,
        h: usize,
        jo: usize,
        jb: usize,
        w: usize,
        epi: &Epilogue,
    ) {
        let load = |p: *const f32, n: usize| {
            let mut buf = [0f32; 8];
            std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
            _mm256_loadu_ps(buf.as_ptr())
        };
        for i in i0..i0 + h {
            let row = c.add(i * ldc + jo);
            for j in (0..w).step_by(8) {
                let n = (w - j).min(8);
                let v = finish256(
                    load(row.add(j), n),
                    epi.bias.map(|b| load(b.as_ptr().add(jb + j), n)),
                    epi.residual
                        .map(|(r, rs)| load(r.as_ptr().add(i * rs + jo + j), n)),
                    epi.act,
                );
                let mut out = [0f32; 8];
                _mm256_storeu_ps(out.as_mut_ptr(), v);
                std::ptr::copy_nonoverlapping(out.as_ptr(), row.add(j), n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        isa: Isa,
        m: usize,
        k: usize,
        n: usize,
        cols: Range<usize>,
        act: Act,
        res: bool,
        par: bool,
    ) {
        let lda = k + 3;
        let a = rand(m * lda, 1);
        // B stored transposed with a row stride, as attention's keys are.
        let ldb = k + 5;
        let bt = rand(n * ldb, 2);
        let bias = rand(n, 3);
        let w = cols.len();
        let ldc = w + 2;
        let resid = rand(m * ldc, 4);
        let packed = PackedB::new(GemmConfig::with_isa(isa), &bt, k, n, 1, ldb);
        let mut c = vec![f32::NAN; m * ldc];
        let epi = Epilogue {
            bias: Some(&bias),
            residual: res.then_some((&resid[..], ldc)),
            act,
        };
        gemm(m, &a, lda, &packed, cols.clone(), &mut c, ldc, &epi, par);
        for i in 0..m {
            for (jo, j) in cols.clone().enumerate() {
                let mut s = 0f64;
                for kk in 0..k {
                    s += a[i * lda + kk] as f64 * bt[j * ldb + kk] as f64;
                }
                s += bias[j] as f64;
                if res {
                    s += resid[i * ldc + jo] as f64;
                }
                let want = match act {
                    Act::None => s,
                    Act::Relu => s.max(0.0),
                    Act::QuickGelu => s / (1.0 + (-1.702 * s).exp()),
                    Act::Gelu => super::super::simd::reference::gelu(s),
                    Act::GeluTanh => {
                        let u = (2.0 / std::f64::consts::PI).sqrt() * (s + 0.044715 * s * s * s);
                        0.5 * s * (1.0 + u.tanh())
                    }
                };
                let got = c[i * ldc + jo] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + (k as f64).sqrt()),
                    "{isa:?} m{m} k{k} n{n} ({i},{j}): {got} vs {want}"
                );
            }
            // Columns outside the requested range are untouched.
            for jo in w..ldc {
                assert!(c[i * ldc + jo].is_nan());
            }
        }
    }

    /// The erf GELU of every epilogue (the vector ones of full and edge tiles, the portable
    /// one) at torch's values, and against an independent f64 GELU over -10..10 in steps of
    /// 1/1024: within 2e-6, relative, down to x = -4, and 1e-5 beyond (the f32 rounding of
    /// x / sqrt 2, squared in the exponent; torch's f32 GELU rounds it too), wherever the value
    /// is above 1e-30 in size.
    #[test]
    fn erf_gelu_is_torchs_within_2e_6() {
        let torch = [
            (-3.0, -0.004_050_225),
            (-1.0, -0.158_655_26),
            (-0.5, -0.154_268_77),
            (0.0, 0.0),
            (0.5, 0.345_731_23),
            (1.0, 0.841_344_7),
            (2.0, 1.954_499_7),
            (4.0, 3.999_873_6),
        ];
        let xs: Vec<f32> = (-10 * 1024..=10 * 1024)
            .map(|i| i as f32 / 1024.0)
            .collect();
        let epi = Epilogue::bias(None, Act::Gelu);
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Generic] {
            if !isa.available() {
                continue;
            }
            // One row per 40 values: whole vectors and a masked tail.
            let w = 40;
            let mut got = xs.clone();
            got.resize(xs.len().div_ceil(w) * w, 0.0);
            let rows = got.len() / w;
            // Safety: `rows` rows of `w` floats.
            unsafe { epilogue(isa, got.as_mut_ptr(), w, 0, rows, 0, 0, w, &epi) };
            for (&x, &g) in xs.iter().zip(&got) {
                let want = super::super::simd::reference::gelu(x as f64);
                if want.abs() > 1e-30 {
                    let rel = (g as f64 - want).abs() / want.abs();
                    let bound = if x >= -4.0 { 2e-6 } else { 1e-5 };
                    assert!(rel < bound, "{isa:?} gelu({x}) = {g}, f64 {want}: {rel:e}");
                } else {
                    assert!(g.abs() < 1e-30, "{isa:?} gelu({x}) = {g}, f64 {want}");
                }
            }
            let mut at: Vec<f32> = torch.iter().map(|t| t.0).collect();
            unsafe { epilogue(isa, at.as_mut_ptr(), at.len(), 0, 1, 0, 0, at.len(), &epi) };
            for (g, (x, want)) in at.iter().zip(torch) {
                assert!(
                    (g - want).abs() < 1e-6,
                    "{isa:?} gelu({x}) = {g}, torch {want}"
                );
            }
        }
        assert_eq!(super::super::simd::gelu_erf(f32::INFINITY), f32::INFINITY);
        assert!(super::super::simd::gelu_erf(f32::NAN).is_nan());
    }

    #[test]
    fn repacked_operand_equals_a_fresh_one() {
        // A wide operand, then a narrower one with a ragged last panel, in the same storage:
        // the reused padding must read as zero.
        let mut b = PackedB::empty(GemmConfig::detected());
        for &(k, n) in &[(40, 100), (33, 45), (7, 3)] {
            let src = rand(k * n, (k * n) as u64);
            b.repack(&src, k, n, n, 1);
            let fresh = PackedB::new(GemmConfig::detected(), &src, k, n, n, 1);
            assert_eq!((b.k(), b.n()), (k, n));
            assert_eq!(b.data.as_slice(), fresh.data.as_slice());
        }
        // Transposed sources (keys: B[kk][j] = src[j * stride + kk]) on every kernel family,
        // against element-by-element reads: whole and partial transpose blocks, ragged panels.
        for isa in [Isa::Generic, Isa::Avx2, Isa::Avx512] {
            if !isa.available() {
                continue;
            }
            let mut b = PackedB::empty(GemmConfig::with_isa(isa));
            for &(k, n) in &[(64, 77), (64, 50), (37, 20), (16, 1), (80, 33)] {
                let stride = k + 9;
                let src = rand(n * stride, (k + n) as u64);
                b.repack(&src, k, n, 1, stride);
                let nr = isa.nr();
                let d = b.data.as_slice();
                for kk in 0..k {
                    for j in 0..n.div_ceil(nr) * nr {
                        let want = if j < n { src[j * stride + kk] } else { 0.0 };
                        let got = d[(j / nr) * k * nr + kk * nr + j % nr];
                        assert_eq!(got, want, "{isa:?} k{k} n{n} ({kk},{j})");
                    }
                }
            }
        }
    }

    #[test]
    fn blocks_shrink_for_threads_that_share_an_l2() {
        let d = Blocking::of(Isa::Avx512);
        assert_eq!(d.shared_by(1, 14), d);
        assert_eq!(d.shared_by(2, 14), Blocking { kc: d.kc, mc: 168 });
        assert_eq!(Blocking { kc: 256, mc: 100 }.shared_by(2, 14).mc, 42);
        assert_eq!(Blocking { kc: 256, mc: 14 }.shared_by(4, 14).mc, 14);
    }

    #[test]
    fn row_blocks_cover_rows_evenly() {
        for (m, mr, mc, parts) in [
            (800, 14, 336, 2),
            (3152, 14, 336, 2),
            (1232, 6, 144, 2),
            (5, 14, 336, 2),
            (1, 4, 128, 1),
            (784, 14, 336, 2),
            (58 * 14, 14, 336, 3),
        ] {
            let b = row_blocks(m, mr, mc, parts);
            assert_eq!(b.first().unwrap().start, 0);
            assert_eq!(b.last().unwrap().end, m);
            for w in b.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            let sizes: Vec<usize> = b.iter().map(|r| r.len().div_ceil(mr)).collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
            assert!(b.iter().all(|r| r.len() <= mc.max(mr)), "{b:?}");
            // Each thread's share (consecutive blocks): equal to within one panel. 800 rows
            // in 14-row panels once split 30 / 28.
            if b.len().is_multiple_of(parts) {
                let shares: Vec<usize> = sizes
                    .chunks(b.len() / parts)
                    .map(|c| c.iter().sum())
                    .collect();
                assert!(
                    shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1,
                    "{m} rows: {shares:?}"
                );
            }
        }
    }

    /// Every (block, panel) runs exactly once, and always with its own block's packed rows:
    /// a taker never repacks its buffer while another thread may still read it.
    #[test]
    fn shared_blocks_run_each_panel_once_with_its_own_rows() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for (mb, threads, panels) in [(4, 2, 9), (7, 2, 5), (6, 3, 4), (2, 2, 1), (5, 4, 30)] {
            let runs: Vec<AtomicUsize> = (0..mb * panels).map(|_| AtomicUsize::new(0)).collect();
            let pack = |r: usize, buf: &mut [f32]| {
                // Uneven packing times shuffle who takes and who helps.
                std::thread::sleep(std::time::Duration::from_micros((r as u64 * 37) % 200));
                buf[0] = (r + 1) as f32;
            };
            let panel = |r: usize, abuf: *const f32, p: usize| {
                // Safety: abuf is a published buffer of at least one float.
                let rows = || unsafe { std::ptr::read_volatile(abuf) } as usize;
                assert_eq!(rows(), r + 1, "block {r} panel {p} started on other rows");
                let pause = 20 + ((r + p) as u64 * 13) % 50;
                std::thread::sleep(std::time::Duration::from_micros(pause));
                assert_eq!(rows(), r + 1, "block {r} panel {p}: rows repacked under it");
                runs[r * panels + p].fetch_add(1, Ordering::Relaxed);
            };
            shared_blocks(mb, threads, panels, 16, &pack, &panel);
            assert!(runs.iter().all(|n| n.load(Ordering::Relaxed) == 1));
        }
    }

    /// The blocking is a speed setting: any depth and row blocking, packed or in-place rows,
    /// serial or parallel, with or without the panel prefetch, gives bit-identical outputs
    /// (each one FMA chain over the depth), edge tiles and the fused epilogue included.
    #[test]
    fn results_do_not_depend_on_the_blocking() {
        for isa in [Isa::Generic, Isa::Avx2, Isa::Avx512] {
            if !isa.available() {
                continue;
            }
            let mr = isa.mr();
            // Rows, depth and columns that leave edge tiles; the second has several row blocks.
            for &(m, k, n) in &[(45, 300, 70), (200, 130, 40)] {
                let a = rand(m * k, 11);
                let w = rand(n * k, 12);
                let bias = rand(n, 13);
                let resid = rand(m * n, 14);
                let epi = Epilogue {
                    bias: Some(&bias),
                    residual: Some((&resid[..], n)),
                    act: Act::QuickGelu,
                };
                let run = |kc: usize, mc: usize, direct: Option<bool>, par: bool| {
                    let cfg = GemmConfig {
                        direct_a: direct,
                        blocking: Blocking { kc, mc },
                        // The panel prefetch too (a speed setting), on whatever CPU tests.
                        prefetch: if par { 12 * 32 } else { 0 },
                        ..GemmConfig::with_isa(isa)
                    };
                    let b = PackedB::from_linear_weight(cfg, &w, n, k);
                    let mut c = vec![f32::NAN; m * n];
                    gemm(m, &a, k, &b, 0..n, &mut c, n, &epi, par);
                    c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let want = run(k, 1000, None, false);
                for (kc, mc) in [(1, 1000), (7, mr), (64, 3 * mr), (128, 5 * mr), (k, mr)] {
                    for direct in [None, Some(true), Some(false)] {
                        for par in [false, true] {
                            assert!(
                                run(kc, mc, direct, par) == want,
                                "{isa:?} {m}x{k}x{n}: kc {kc}, mc {mc}, {direct:?}, parallel {par}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_naive_product_on_every_kernel() {
        for isa in [Isa::Generic, Isa::Avx2, Isa::Avx512] {
            if !isa.available() {
                continue;
            }
            let nr = isa.nr();
            for &(m, k, n) in &[
                (1, 1, 1),
                (5, 7, 3),
                (29, 64, 77),
                (37, 700, 50),
                (200, 33, 100),
                // More column panels than the in-place limit: packed full row panels.
                (60, 300, 600),
                (31, 37, 530),
                // Deeper than one cache block: partial sums accumulate across depth blocks.
                (30, 1100, 70),
                // Enough rows for several blocks per thread: blocks and panels shared.
                (700, 40, 100),
                (700, 300, 530),
            ] {
                check(isa, m, k, n, 0..n, Act::None, false, false);
                check(isa, m, k, n, 0..n, Act::QuickGelu, true, true);
                check(isa, m, k, n, 0..n, Act::Gelu, true, false);
                check(isa, m, k, n, 0..n, Act::GeluTanh, true, true);
                check(isa, m, k, n, 0..n, Act::Relu, false, true);
                if n > nr {
                    check(isa, m, k, n, nr..n, Act::None, true, true);
                }
            }
            check(isa, 3, 0, 5, 0..5, Act::None, true, false);
        }
    }
}
