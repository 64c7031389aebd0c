//! A weight operand packed once at load for the products the model was built for: f32
//! panels for the FMA kernels, or bf16 pairs for the bf16 kernels (`GemmConfig::bf16`).
//! Linear layers and convolutions hold one and never look at which.

use super::bf16::{self, Bf16Weight};
use super::gemm::{self, Epilogue, GemmConfig, PackedB};
use std::ops::Range;

#[derive(Debug, Clone)]
pub enum Weight {
    F32(PackedB),
    Bf16(Bf16Weight),
}

impl Weight {
    /// `B[kk][j] = src[kk * rs + j * cs]`, `[k, n]`, packed for `cfg`.
    pub fn new(cfg: GemmConfig, src: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        if cfg.bf16 {
            Self::Bf16(Bf16Weight::new(cfg, src, k, n, rs, cs))
        } else {
            Self::F32(PackedB::new(cfg, src, k, n, rs, cs))
        }
    }

    /// A torch `Linear` weight `[out, in]` as `B = W^T`.
    pub fn from_linear_weight(cfg: GemmConfig, w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        Self::new(cfg, w, in_dim, out_dim, 1, in_dim)
    }

    /// An empty operand for `cfg`, for [`Self::repack`].
    pub fn empty(cfg: GemmConfig) -> Self {
        if cfg.bf16 {
            Self::Bf16(Bf16Weight::empty(cfg))
        } else {
            Self::F32(PackedB::empty(cfg))
        }
    }

    /// Packs a new `B` (as [`Self::new`], for `cfg`) into this one's storage where the
    /// kernel is the same: attention's keys and values per head and image.
    pub fn repack(
        &mut self,
        cfg: GemmConfig,
        src: &[f32],
        k: usize,
        n: usize,
        rs: usize,
        cs: usize,
    ) {
        if matches!(self, Self::Bf16(_)) != cfg.bf16 {
            *self = Self::empty(cfg);
        }
        match self {
            Self::F32(b) => {
                b.set_config(cfg);
                b.repack(src, k, n, rs, cs);
            }
            Self::Bf16(b) => b.repack(cfg, src, k, n, rs, cs),
        }
    }

    /// This operand as a bf16 one, emptied into one for `cfg` if it was f32: attention's keys
    /// and values repacked straight from bf16 rows.
    pub fn bf16_for(&mut self, cfg: GemmConfig) -> &mut Bf16Weight {
        if let Self::F32(_) = self {
            *self = Self::Bf16(Bf16Weight::empty(cfg));
        }
        match self {
            Self::Bf16(b) => b,
            Self::F32(_) => unreachable!("made bf16 above"),
        }
    }

    /// Rows of the kernel's register tile.
    pub fn row_tile(&self) -> usize {
        match self {
            Self::F32(b) => b.isa().mr(),
            Self::Bf16(b) => b.row_tile(),
        }
    }

    /// Columns of a packed panel.
    pub fn panel_width(&self) -> usize {
        match self {
            Self::F32(b) => b.isa().nr(),
            Self::Bf16(_) => bf16::NR,
        }
    }

    pub fn k(&self) -> usize {
        match self {
            Self::F32(b) => b.k(),
            Self::Bf16(b) => b.k(),
        }
    }

    pub fn n(&self) -> usize {
        match self {
            Self::F32(b) => b.n(),
            Self::Bf16(b) => b.n(),
        }
    }

    /// The configuration the weight was packed for.
    pub fn config(&self) -> GemmConfig {
        match self {
            Self::F32(b) => b.config(),
            Self::Bf16(b) => b.config(),
        }
    }

    /// The multiple a product's first column must be (the f32 kernels start on a panel).
    pub fn col_align(&self) -> usize {
        match self {
            Self::F32(b) => b.isa().nr(),
            Self::Bf16(_) => 1,
        }
    }

    /// `c[i * ldc + (j - cols.start)] = epi(sum_kk a[i * lda + kk] * B[kk][j])` for `i < m`,
    /// `j` in `cols`; `parallel` spreads the work over rayon's pool (false inside a parallel
    /// loop).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        cols: Range<usize>,
        c: &mut [f32],
        ldc: usize,
        epi: &Epilogue,
        parallel: bool,
    ) {
        match self {
            Self::F32(b) => gemm::gemm(m, a, lda, b, cols, c, ldc, epi, parallel),
            Self::Bf16(b) => bf16::gemm(m, a, lda, b, cols, c, ldc, epi, parallel),
        }
    }

    /// [`Self::gemm`] into a new dense `[m, cols.len()]` buffer.
    pub fn gemm_new(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        cols: Range<usize>,
        epi: &Epilogue,
        parallel: bool,
    ) -> Vec<f32> {
        match self {
            Self::F32(b) => gemm::gemm_new(m, a, lda, b, cols, epi, parallel),
            Self::Bf16(b) => {
                let n = cols.len();
                let mut out = Vec::with_capacity(m * n);
                if m * n > 0 {
                    // Safety: the spare capacity holds m x n floats and the bf16 tiles write
                    // each of them (every row block, every panel's columns in `cols`, the
                    // whole depth in one pass) before any is read; operands checked inside.
                    unsafe {
                        bf16::gemm_ptr(m, a, lda, b, cols, out.as_mut_ptr(), n, epi, parallel);
                        out.set_len(m * n);
                    }
                }
                out
            }
        }
    }

    /// [`Self::gemm`] through a raw pointer.
    ///
    /// # Safety
    /// `c` must be valid for writes at `i * ldc + j` for `i < m`, `j < cols.len()`, nothing
    /// else may access those elements during the call, and `a` must hold
    /// `(m - 1) * lda + self.k()` elements.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_ptr(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        cols: Range<usize>,
        c: *mut f32,
        ldc: usize,
        epi: &Epilogue,
        parallel: bool,
    ) {
        self.gemm_ptr_depth(m, a, lda, self.k(), cols, c, ldc, epi, parallel)
    }

    /// [`Self::gemm_ptr`] summing over the first `depth <= self.k()` rows of `B` only (each
    /// row of `a` read up to `depth`): causal attention.
    ///
    /// # Safety
    /// As [`Self::gemm_ptr`], with `a` holding `(m - 1) * lda + depth` elements.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_ptr_depth(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        depth: usize,
        cols: Range<usize>,
        c: *mut f32,
        ldc: usize,
        epi: &Epilogue,
        parallel: bool,
    ) {
        match self {
            Self::F32(b) => gemm::gemm_ptr_depth(m, a, lda, b, depth, cols, c, ldc, epi, parallel),
            Self::Bf16(b) => bf16::gemm_ptr_depth(m, a, lda, b, depth, cols, c, ldc, epi, parallel),
        }
    }

    /// [`bf16::gemm_pairs_ptr`]: activations already in bf16 pairs; a bf16 operand only.
    ///
    /// # Safety
    /// As [`bf16::gemm_pairs_ptr`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_pairs_ptr(
        &self,
        m: usize,
        a: &[u32],
        lda: usize,
        depth: usize,
        cols: Range<usize>,
        c: *mut f32,
        ldc: usize,
        epi: &Epilogue,
        parallel: bool,
    ) {
        match self {
            Self::F32(_) => panic!("bf16 activations for an f32 product"),
            Self::Bf16(b) => bf16::gemm_pairs_ptr(m, a, lda, b, depth, cols, c, ldc, epi, parallel),
        }
    }

    /// [`Self::gemm_ptr_depth`] with bf16 results ([`bf16::gemm_ptr_depth_to_bf16`]); a bf16
    /// operand only.
    ///
    /// # Safety
    /// As [`bf16::gemm_ptr_depth_to_bf16`].
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_ptr_depth_to_bf16(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        depth: usize,
        cols: Range<usize>,
        c16: *mut u16,
        ldc: usize,
        epi: &Epilogue,
        parallel: bool,
    ) {
        match self {
            Self::F32(_) => panic!("bf16 results from an f32 product"),
            Self::Bf16(b) => {
                bf16::gemm_ptr_depth_to_bf16(m, a, lda, b, depth, cols, c16, ldc, epi, parallel)
            }
        }
    }
}
