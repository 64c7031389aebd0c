//! Fused CPU kernels for the element-wise work around the matmuls: QuickGELU and (optionally
//! causal) softmax over the last dimension. They use a vectorisable exp accurate to ~2e-7
//! relative, far inside the parity tolerance. Other devices and dtypes use candle's ops.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;

/// Defines a function whose body is compiled three times (AVX-512, AVX2 + FMA, baseline) and
/// dispatched on the CPU's kernel family, so plain element-wise loops vectorise beyond SSE2
/// without building the whole binary for one CPU.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::models::sgemm::isa() {
                    // Safety: isa() only reports families the CPU supports.
                    $crate::models::sgemm::Isa::Avx512 => return unsafe { v4($($arg),*) },
                    $crate::models::sgemm::Isa::Avx2 => return unsafe { v3($($arg),*) },
                    $crate::models::sgemm::Isa::Generic => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// exp(x) as 2^n * e^f, n = round(x / ln 2), f reduced with a two-part ln 2 (Cody-Waite) and
/// e^f from its degree-7 Taylor polynomial (|f| <= 0.35); branch-free so loops vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest with the 1.5 * 2^23 trick (no libm call): t's low mantissa bits hold n.
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    // n read from t's bits, not by `n as i32`: Rust's saturating float-to-int cast does not
    // vectorise, and it turned every exp loop (GELU, softmax) into per-lane scalar code.
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let bits = ((ni + 127) << 23) as u32;
    p * f32::from_bits(bits)
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Option<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Some(&v[a..b]),
        _ => None,
    }
}

const CHUNK: usize = 1 << 14;

struct QuickGelu;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "quick-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)
            .ok_or_else(|| candle_core::Error::Msg("quick-gelu: contiguous f32 only".into()))?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, i)| {
                for (o, &v) in o.iter_mut().zip(i) {
                    *o = v / (1.0 + exp(-1.702 * v));
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `x * sigmoid(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&QuickGelu)
    } else {
        x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?)
    }
}

/// Softmax over the last dim of rows of length `n`; with `causal`, row r (query position
/// r mod n) only sees columns <= its position and the rest come out 0.
struct Softmax {
    causal: bool,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)
            .ok_or_else(|| candle_core::Error::Msg("softmax: contiguous f32 only".into()))?;
        let dims = l.shape().dims();
        let n = *dims.last().unwrap_or(&1);
        let rows_per_matrix = if dims.len() >= 2 {
            dims[dims.len() - 2]
        } else {
            1
        };
        // One matrix per task: the causal mask counts rows from each matrix's start.
        let mut out = x.to_vec();
        out.par_chunks_mut(rows_per_matrix * n)
            .for_each(|m| softmax_rows(m, n, 1.0, self.causal));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Softmax over the last dimension (in f32 for reduced precisions); `causal` masks the
/// columns after each row's position within its `[.., L, L]` matrix.
pub fn softmax_last(x: &Tensor, causal: bool) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&Softmax { causal });
    }
    let dt = x.dtype();
    let mut x = x.to_dtype(DType::F32)?;
    if causal {
        let l = x.dim(candle_core::D::Minus1)?;
        let mask: Vec<f32> = (0..l)
            .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        x = x.broadcast_add(&Tensor::from_vec(mask, (l, l), x.device())?)?;
    }
    candle_nn::ops::softmax_last_dim(&x)?.to_dtype(dt)
}

/// Depthwise 3x3 convolution (zero padding 1) over a channels-last grid `[N, g, g, C]`, plus a
/// per-channel bias, then QuickGELU: the LEFF middle in one pass. `taps`: `[9, C]` row-major
/// (ky * 3 + kx). Returns None where the fused CPU kernel does not apply.
pub fn depthwise3x3_gelu(x: &Tensor, taps: &[Vec<f32>], bias: &[f32]) -> Result<Option<Tensor>> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let (n, g, g2, c) = x.dims4()?;
    if g != g2 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let src = match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => &v[a..b],
        _ => return Ok(None),
    };
    let mut out = src.to_vec();
    drop(storage);
    depthwise3x3_gelu_inplace(&mut out, n, g, c, taps, bias);
    Ok(Some(Tensor::from_vec(out, (n, g, g, c), x.device())?))
}

/// [`depthwise3x3_gelu`] on a plain `[n, g, g, c]` buffer, in place. Each image goes row by
/// row keeping copies of the two input rows its next output row still needs, so no second
/// grid-sized buffer is allocated, zeroed and streamed through memory (the ViT-B-16 grid is
/// 38 MB at batch 16).
pub fn depthwise3x3_gelu_inplace(
    buf: &mut [f32],
    n: usize,
    g: usize,
    c: usize,
    taps: &[Vec<f32>],
    bias: &[f32],
) {
    let row = g * c;
    assert!(buf.len() == n * g * row && taps.len() == 9 && bias.len() == c);
    assert!(taps.iter().all(|t| t.len() == c));
    if row == 0 {
        return;
    }
    buf.par_chunks_mut(g * row).for_each(|img| {
        let (mut above, mut centre) = (vec![0f32; row], vec![0f32; row]);
        for y in 0..g {
            centre.copy_from_slice(&img[y * row..(y + 1) * row]);
            let (head, tail) = img.split_at_mut((y + 1) * row);
            let below = (y + 1 < g).then(|| &tail[..row]);
            let rows = [(y > 0).then_some(&above[..]), Some(&centre[..]), below];
            depthwise_row(rows, g, c, taps, bias, &mut head[y * row..]);
            std::mem::swap(&mut above, &mut centre);
        }
    });
}

/// Channels per register block of the depthwise kernel: 64 floats are four AVX-512 or eight
/// AVX2 registers, so the nine taps accumulate without storing the partial sums.
const DW_BLOCK: usize = 64;

simd_fn! {
    /// One output row of [`depthwise3x3_gelu_inplace`] from the input rows above, at and below
    /// it (None: zero padding), each `[g, c]`.
    fn depthwise_row(rows: [Option<&[f32]>; 3], g: usize, c: usize, taps: &[Vec<f32>], bias: &[f32], dst: &mut [f32]) {
        let full = c - c % DW_BLOCK;
        for xx in 0..g {
            let xs = xx.saturating_sub(1)..(xx + 2).min(g);
            let o = &mut dst[xx * c..(xx + 1) * c];
            for c0 in (0..full).step_by(DW_BLOCK) {
                // Fixed-size block: the sums stay in registers across the taps.
                let mut acc: [f32; DW_BLOCK] = bias[c0..c0 + DW_BLOCK].try_into().unwrap();
                for (ky, r) in rows.iter().enumerate() {
                    let Some(r) = r else { continue };
                    for ix in xs.clone() {
                        let at = ix * c + c0;
                        let v: &[f32; DW_BLOCK] = r[at..at + DW_BLOCK].try_into().unwrap();
                        let tap = &taps[ky * 3 + (ix + 1 - xx)];
                        let t: &[f32; DW_BLOCK] = tap[c0..c0 + DW_BLOCK].try_into().unwrap();
                        for i in 0..DW_BLOCK {
                            acc[i] += v[i] * t[i];
                        }
                    }
                }
                // QuickGELU while the sums are still in registers.
                for a in acc.iter_mut() {
                    *a /= 1.0 + exp(-1.702 * *a);
                }
                o[c0..c0 + DW_BLOCK].copy_from_slice(&acc);
            }
            if full < c {
                let rest = &mut o[full..];
                rest.copy_from_slice(&bias[full..]);
                for (ky, r) in rows.iter().enumerate() {
                    let Some(r) = r else { continue };
                    for ix in xs.clone() {
                        let tap = &taps[ky * 3 + (ix + 1 - xx)];
                        let src = &r[ix * c + full..(ix + 1) * c];
                        for ((a, &v), &t) in rest.iter_mut().zip(src).zip(&tap[full..]) {
                            *a += v * t;
                        }
                    }
                }
                for v in rest.iter_mut() {
                    *v /= 1.0 + exp(-1.702 * *v);
                }
            }
        }
    }
}

simd_fn! {
    /// `dst[..head.len()] += head`, then the rest of `dst` += `tail`.
    pub fn add_assign(dst: &mut [f32], head: &[f32], tail: &[f32]) {
        let (a, b) = dst.split_at_mut(head.len());
        for (o, &v) in a.iter_mut().zip(head) {
            *o += v;
        }
        for (o, &v) in b.iter_mut().zip(tail) {
            *o += v;
        }
    }
}

/// A `len`-float buffer filled by parallel tasks, chunk `i` (`chunk` floats, the last maybe
/// fewer) by `fill(i, chunk)`: nothing is zeroed first on the calling thread, which would
/// leave the other threads idle.
///
/// # Safety
/// `fill` must write every element of the chunk it is given.
pub(crate) unsafe fn par_build(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // Safety: the caller's `fill` wrote all `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// Which input rows a row-wise op reads: output row `r` reads input row
/// `(r / group) * (group + skip) + skip + r % group`, found at `x[row * stride..]`. All rows in
/// order is `group = rows, skip = 0`; a ViT's patch tokens without the class tokens are
/// `group = g * g, skip = 1`.
#[derive(Clone, Copy, Debug)]
pub struct RowPick {
    pub stride: usize,
    pub group: usize,
    pub skip: usize,
}

impl RowPick {
    pub fn all(rows: usize, stride: usize) -> Self {
        Self {
            stride,
            group: rows.max(1),
            skip: 0,
        }
    }
    #[inline(always)]
    fn offset(self, r: usize) -> usize {
        ((r / self.group) * (self.group + self.skip) + self.skip + r % self.group) * self.stride
    }
}

/// LayerNorm (eps 1e-5, biased variance) of `rows` rows of `d` features picked by `pick`,
/// written densely to a new `[rows, d]` buffer (filled by the parallel tasks, not zeroed
/// first on the calling thread). Two passes in f32 with 16 partial sums, so the reductions
/// vectorise.
pub fn layer_norm_rows(
    x: &[f32],
    rows: usize,
    pick: RowPick,
    weight: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let d = weight.len();
    let len = rows * d;
    if rows > 0 {
        assert!(
            pick.offset(rows - 1) + d <= x.len(),
            "layer_norm_rows: input too short"
        );
    }
    let rows_per_task = (CHUNK / d.max(1)).max(1);
    // Safety: layer_norm_chunk writes every element of its whole rows.
    unsafe {
        par_build(len, rows_per_task * d, |ci, o| {
            layer_norm_chunk(x, ci * rows_per_task, pick, weight, bias, o)
        })
    }
}

simd_fn! {
    fn layer_norm_chunk(
        x: &[f32],
        r0: usize,
        pick: RowPick,
        weight: &[f32],
        bias: &[f32],
        o: &mut [std::mem::MaybeUninit<f32>],
    ) {
        let d = weight.len();
        for (ri, orow) in o.chunks_mut(d).enumerate() {
            let at = pick.offset(r0 + ri);
            let row = &x[at..at + d];
            let mean = lane_sum(row, |v| v) / d as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / d as f32;
            let inv = 1.0 / (var + super::nn::LN_EPS as f32).sqrt();
            for (((o, &v), &w), &b) in orow.iter_mut().zip(row).zip(weight).zip(bias) {
                o.write((v - mean) * inv * w + b);
            }
        }
    }
}

simd_fn! {
    /// Row-wise softmax of `scale * s` over rows of `n`; with `causal`, row i keeps only
    /// columns <= i (the rest become 0).
    fn softmax_rows(s: &mut [f32], n: usize, scale: f32, causal: bool) {
        for (i, row) in s.chunks_mut(n).enumerate() {
            let len = if causal { (i + 1).min(n) } else { n };
            let (live, dead) = row.split_at_mut(len);
            let mx = lane_max(live);
            for x in live.iter_mut() {
                *x = exp((*x - mx) * scale);
            }
            let inv = 1.0 / lane_sum(live, |v| v);
            for x in live.iter_mut() {
                *x *= inv;
            }
            dead.fill(0.0);
        }
    }
}

#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let m = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    acc.iter().fold(m, |a, &v| a.max(v))
}

#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let mut s: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    s += acc.iter().sum::<f32>();
    s
}

/// Where attention finds its operands: row `i` of image `b` for head `h` starts at
/// `data[(b * rows + i) * stride + offset + h * head_dim]`.
#[derive(Clone, Copy)]
pub struct HeadView<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub stride: usize,
    pub offset: usize,
}

/// Multi-head scaled dot-product attention read straight out of the projections (no q/k/v
/// copies): per image and head, `softmax(scale q k^T) v` through the packed gemm, with the
/// result as `[images * q.rows, heads * head_dim]` (row `b * q.rows + i`, columns
/// `h * head_dim..`). `causal` masks keys after the query's position (queries and keys then
/// share positions).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: HeadView,
    k: HeadView,
    v: HeadView,
    images: usize,
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> Vec<f32> {
    use super::sgemm::{self, Epilogue, PackedB};
    let d = heads * head_dim;
    let (lq, lk) = (q.rows, k.rows);
    let len = images * lq * d;
    let mut out = Vec::<f32>::with_capacity(len);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let optr = super::sgemm::SendPtr(out.as_mut_ptr());
    thread_local! {
        // Packed keys and values, reused across heads and calls.
        static KV: std::cell::RefCell<(PackedB, PackedB)> =
            std::cell::RefCell::new((PackedB::empty(), PackedB::empty()));
    }
    (0..images * heads).into_par_iter().for_each(|t| {
        KV.with(|kv| {
            let (kt, vp) = &mut *kv.borrow_mut();
            let (b, h) = (t / heads, t % heads);
            let kb = (b * lk) * k.stride + k.offset + h * head_dim;
            let vb = (b * lk) * v.stride + v.offset + h * head_dim;
            // B = k^T: B[c][j] = k[j][c].
            kt.repack(&k.data[kb..], head_dim, lk, 1, k.stride);
            vp.repack(&v.data[vb..], lk, head_dim, v.stride, 1);
            let qb = (b * lq) * q.stride + q.offset + h * head_dim;
            let dst = unsafe { optr.get().add(b * lq * d + h * head_dim) };
            // Causal: query row i sees keys 0..=i, so each band of rows (one register tile)
            // computes its scores only up to the panel holding its last key and sums its
            // probabilities only over the keys it sees (~40% of a 77-token prompt's products).
            // Otherwise one band of every row over every key.
            let (mr, nr) = (kt.isa().mr(), kt.isa().nr());
            let band = if causal { mr } else { lq.max(1) };
            let seen = |r1: usize| if causal { r1.min(lk) } else { lk };
            let mut s = vec![0f32; lq * lk];
            for r0 in (0..lq).step_by(band) {
                let r1 = (r0 + band).min(lq);
                let c1 = (seen(r1).div_ceil(nr) * nr).min(lk);
                // Safety: rows r0..r1 of `s` hold lk >= c1 floats each.
                unsafe {
                    sgemm::gemm_ptr(
                        r1 - r0,
                        &q.data[qb + r0 * q.stride..],
                        q.stride,
                        kt,
                        0..c1,
                        s.as_mut_ptr().add(r0 * lk),
                        lk,
                        &Epilogue::NONE,
                        false,
                    )
                };
            }
            // Reads only the scores a row sees (written above) and zeroes the rest.
            softmax_rows(&mut s, lk, scale, causal);
            for r0 in (0..lq).step_by(band) {
                let r1 = (r0 + band).min(lq);
                // Safety: each task writes its own head's columns of its own image's rows,
                // all inside `out`'s capacity of images * lq * d; depth <= lk rows of values.
                unsafe {
                    sgemm::gemm_ptr_depth(
                        r1 - r0,
                        &s[r0 * lk..],
                        lk,
                        vp,
                        seen(r1),
                        0..head_dim,
                        dst.add(r0 * d),
                        d,
                        &Epilogue::NONE,
                        false,
                    )
                };
            }
        })
    });
    // Safety: the (image, head) tasks together wrote every row and every column of it.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.01;
        }
        assert!(worst < 5e-7, "{worst}");
    }

    #[test]
    fn depthwise_matches_direct_convolution() {
        // Channels: one register block plus a remainder, and fewer than one block.
        for (n, g, c) in [(2, 4, DW_BLOCK + 6), (1, 3, 5), (1, 1, DW_BLOCK)] {
            let val = |i: usize| ((i * 7919 % 1000) as f32 / 500.0) - 1.0;
            let src: Vec<f32> = (0..n * g * g * c).map(val).collect();
            let taps: Vec<Vec<f32>> = (0..9)
                .map(|t| (0..c).map(|ch| val(t * 31 + ch * 3 + 1)).collect())
                .collect();
            let bias: Vec<f32> = (0..c).map(|ch| val(ch + 17) * 0.1).collect();
            let mut got = src.clone();
            depthwise3x3_gelu_inplace(&mut got, n, g, c, &taps, &bias);
            for b in 0..n {
                for y in 0..g {
                    for x in 0..g {
                        for ch in 0..c {
                            let mut s = bias[ch] as f64;
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (y as isize + ky - 1, x as isize + kx - 1);
                                    if iy < 0 || ix < 0 || iy >= g as isize || ix >= g as isize {
                                        continue;
                                    }
                                    let at = ((b * g + iy as usize) * g + ix as usize) * c + ch;
                                    s += src[at] as f64 * taps[(ky * 3 + kx) as usize][ch] as f64;
                                }
                            }
                            let want = s / (1.0 + (-1.702 * s).exp());
                            let v = got[((b * g + y) * g + x) * c + ch] as f64;
                            assert!((v - want).abs() < 1e-5, "{n} {g} {c}: {v} vs {want}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn attention_matches_naive_softmax_attention() {
        // Queries, keys and values read out of one fused projection, as the encoders do;
        // causal lengths around the register-tile bands (1 band, several, ragged last one).
        let (heads, hd) = (3, 8);
        let d = heads * hd;
        for (n, l, causal) in [(2, 77, true), (1, 15, true), (2, 5, true), (2, 50, false)] {
            let val = |i: usize| ((i * 7919 % 1009) as f32 / 504.5) - 1.0;
            let qkv: Vec<f32> = (0..n * l * 3 * d).map(val).collect();
            let view = |offset| HeadView {
                data: &qkv,
                rows: l,
                stride: 3 * d,
                offset,
            };
            let got = attention(view(0), view(d), view(2 * d), n, heads, hd, causal);
            let scale = 1.0 / (hd as f64).sqrt();
            for b in 0..n {
                for h in 0..heads {
                    let at = |i: usize, part: usize, c: usize| {
                        qkv[(b * l + i) * 3 * d + part * d + h * hd + c] as f64
                    };
                    for i in 0..l {
                        let seen = if causal { i + 1 } else { l };
                        let s: Vec<f64> = (0..seen)
                            .map(|j| (0..hd).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>())
                            .map(|x| x * scale)
                            .collect();
                        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                        let z: f64 = e.iter().sum();
                        for c in 0..hd {
                            let want: f64 = (0..seen).map(|j| e[j] / z * at(j, 2, c)).sum();
                            let v = got[(b * l + i) * d + h * hd + c] as f64;
                            assert!((v - want).abs() < 1e-5, "{n} {l} {causal}: {v} vs {want}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_ops_match_reference_ops() {
        let x = Tensor::randn(0f32, 3.0, (2, 3, 5, 5), &Device::Cpu).unwrap();
        let a = quick_gelu(&x).unwrap();
        let b = x
            .mul(&candle_nn::ops::sigmoid(&(&x * 1.702).unwrap()).unwrap())
            .unwrap();
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5);
        let s = softmax_last(&x, false).unwrap();
        let r = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let d = (s - r)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6);
        let mask: Vec<f32> = (0..5)
            .flat_map(|i| (0..5).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let m = Tensor::from_vec(mask, (5, 5), &Device::Cpu).unwrap();
        let r = candle_nn::ops::softmax_last_dim(&x.broadcast_add(&m).unwrap()).unwrap();
        let s = softmax_last(&x, true).unwrap();
        let d = (s - r)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-6);
    }
}
