//! The native engine's kernels around the matrix multiply, on plain row buffers: LayerNorm,
//! (optionally causal) softmax, multi-head attention read straight out of the fused
//! projection, the LEFF depthwise 3x3 convolution with its QuickGELU, and the helpers that
//! fill buffers from parallel tasks. Every exp is [`exp`] (~2e-7 relative).

use super::bf16::Bf16Rows;
use super::gemm::{self, Epilogue};
use super::simd::{exp, lane_sum, simd_fn};
use super::weight::Weight;
use rayon::prelude::*;

/// Floats per parallel task of the row-wise kernels.
const CHUNK: usize = 1 << 14;

/// LayerNorm's epsilon, as the reference's `nn.LayerNorm` default.
pub const LN_EPS: f32 = 1e-5;

/// Depthwise 3x3 convolution (zero padding 1) over a channels-last grid `[n, g, g, c]`, plus a
/// per-channel bias, then QuickGELU: the LEFF middle in one pass, in place. `taps`: `[9, c]`
/// row-major (ky * 3 + kx). Each image goes row by
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

/// [`depthwise3x3_gelu_inplace`] rounded to bf16 pairs for the bf16 product that follows
/// (LEFF's `linear2`): one grid row at a time into a per-thread scratch, rounded there; `buf`
/// stays as it is, so no rows need copying.
pub fn depthwise3x3_gelu_bf16(
    buf: &[f32],
    n: usize,
    g: usize,
    c: usize,
    taps: &[Vec<f32>],
    bias: &[f32],
) -> Bf16Rows {
    let row = g * c;
    assert!(buf.len() == n * g * row && taps.len() == 9 && bias.len() == c);
    assert!(taps.iter().all(|t| t.len() == c));
    // A task is one grid row (g pixels), so its first pixel starts a row of an image.
    Bf16Rows::build(n * g * g, c, g, |r0, o| {
        let (b, y) = (r0 / (g * g), (r0 / g) % g);
        let img = &buf[b * g * row..(b + 1) * g * row];
        let at = |yy: usize| &img[yy * row..(yy + 1) * row];
        let rows = [
            (y > 0).then(|| at(y - 1)),
            Some(at(y)),
            (y + 1 < g).then(|| at(y + 1)),
        ];
        depthwise_row(rows, g, c, taps, bias, o)
    })
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

/// A depthwise convolution's shape over channels-last images `[n, h, w, c]`: an odd `k` x `k`
/// window at `stride`, zero padding `k / 2`; `gelu`: torch's erf GELU on the outputs.
#[derive(Clone, Copy, Debug)]
pub struct Depthwise {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub k: usize,
    pub stride: usize,
    pub gelu: bool,
}

impl Depthwise {
    /// The output columns `[.0, .1)` whose windows lie inside the image across.
    fn inner(&self) -> (usize, usize) {
        let (half, s) = (self.k / 2, self.stride.max(1));
        let hi = if self.w > half {
            ((self.w - 1 - half) / s + 1).min(self.out_size().1)
        } else {
            0
        };
        (half.div_ceil(s), hi)
    }

    /// The output grid's height and width.
    pub fn out_size(&self) -> (usize, usize) {
        let s = self.stride.max(1);
        (
            (self.h + 2 * (self.k / 2) - self.k) / s + 1,
            (self.w + 2 * (self.k / 2) - self.k) / s + 1,
        )
    }
}

/// Depthwise convolution plus a per-channel bias (ConvNeXt's `conv_dw`, the FastViT and
/// ViTamin depthwise convs, strided or not): `taps` `[k * k, c]` row-major (ky * k + kx);
/// each sum in window order from the bias over the window's in-image taps, as a direct
/// convolution takes it. One task per output row.
pub fn depthwise_nhwc(x: &[f32], d: Depthwise, taps: &[f32], bias: &[f32]) -> Vec<f32> {
    let Depthwise { n, h, w, c, k, .. } = d;
    assert!(x.len() == n * h * w * c && taps.len() == k * k * c && bias.len() == c);
    assert!(k % 2 == 1 && d.stride > 0, "an odd window and a stride");
    let (ho, wo) = d.out_size();
    let row = wo * c;
    if row == 0 || ho == 0 {
        return Vec::new();
    }
    // Wide windows over rows with room for whole pixel blocks go channel block by channel
    // block (each block's weights loaded once for several pixels); 3x3 windows and narrow
    // rows go pixel by pixel over wider channel blocks, faster there (measured on Zen 3).
    // Both take each sum in the same order, so the choice changes no value.
    let blocked = k >= 5 && d.inner().1 >= d.inner().0 + DW_PIXELS;
    // Safety: each task writes all of its output row.
    unsafe {
        par_build(n * ho * row, row, |r, dst| {
            let (b, y) = (r / ho, r % ho);
            let img = &x[b * h * w * c..(b + 1) * h * w * c];
            if blocked {
                depthwise_nhwc_row(img, y, d, taps, bias, dst)
            } else {
                depthwise_pixels_row(img, y, d, taps, bias, dst)
            }
        })
    }
}

simd_fn! {
    /// Output row `y` of [`depthwise_nhwc`] for one image `img` (`[h, w, c]`), pixel by
    /// pixel over blocks of [`DW_BLOCK`] channels.
    fn depthwise_pixels_row(
        img: &[f32],
        y: usize,
        d: Depthwise,
        taps: &[f32],
        bias: &[f32],
        dst: &mut [std::mem::MaybeUninit<f32>],
    ) {
        let Depthwise { h, w, c, k, stride, gelu, .. } = d;
        let (_, wo) = d.out_size();
        let half = k / 2;
        let cy = y * stride;
        let ys = cy.saturating_sub(half)..(cy + half + 1).min(h);
        let full = c - c % DW_BLOCK;
        for xx in 0..wo {
            let cx = xx * stride;
            let xs = cx.saturating_sub(half)..(cx + half + 1).min(w);
            let o = &mut dst[xx * c..(xx + 1) * c];
            for c0 in (0..full).step_by(DW_BLOCK) {
                // Fixed-size block: the sums stay in registers across the taps.
                let mut acc: [f32; DW_BLOCK] = bias[c0..c0 + DW_BLOCK].try_into().unwrap();
                for iy in ys.clone() {
                    for ix in xs.clone() {
                        let at = (iy * w + ix) * c + c0;
                        let ti = ((iy + half - cy) * k + ix + half - cx) * c + c0;
                        let v: &[f32; DW_BLOCK] = img[at..at + DW_BLOCK].try_into().unwrap();
                        let t: &[f32; DW_BLOCK] = taps[ti..ti + DW_BLOCK].try_into().unwrap();
                        for i in 0..DW_BLOCK {
                            acc[i] += v[i] * t[i];
                        }
                    }
                }
                depthwise_put(&mut o[c0..], &acc, gelu);
            }
            if full < c {
                let mut rest = [0f32; DW_BLOCK];
                let rest = &mut rest[..c - full];
                rest.copy_from_slice(&bias[full..]);
                for iy in ys.clone() {
                    for ix in xs.clone() {
                        let at = (iy * w + ix) * c;
                        let ti = ((iy + half - cy) * k + ix + half - cx) * c;
                        let t = &taps[ti + full..ti + c];
                        for ((a, &v), &t) in rest.iter_mut().zip(&img[at + full..at + c]).zip(t) {
                            *a += v * t;
                        }
                    }
                }
                depthwise_put(&mut o[full..], rest, gelu);
            }
        }
    }
}

/// Channels per register block of [`depthwise_nhwc`]: one AVX-512 vector, two AVX2 ones.
const DW_LANES: usize = 16;
/// Output pixels per register block of [`depthwise_nhwc`] where their windows lie inside the
/// image across: each tap's weights are loaded once for all of them.
const DW_PIXELS: usize = 4;

/// `P` neighbouring output pixels x [`DW_LANES`] channels over `ny` x `nx` taps: `at` is the
/// first pixel's first tap's input (channel offset included), `taps` start at that tap and
/// the block's channel; the sums stay in registers across the taps.
#[inline(always)]
fn depthwise_block<const P: usize>(
    img: &[f32],
    at: usize,
    (c, w, s, k): (usize, usize, usize, usize),
    taps: &[f32],
    (ny, nx): (usize, usize),
    bias: &[f32; DW_LANES],
) -> [[f32; DW_LANES]; P] {
    let mut acc = [*bias; P];
    if ny == 0 || nx == 0 {
        return acc;
    }
    // One check for the block instead of one per load: per-load checks cost more than the
    // arithmetic and kept the weights out of registers.
    let last = ((ny - 1) * w + (P - 1) * s + nx - 1) * c + DW_LANES;
    assert!(at + last <= img.len() && ((ny - 1) * k + nx - 1) * c + DW_LANES <= taps.len());
    let (img, taps) = (img[at..].as_ptr(), taps.as_ptr());
    for dy in 0..ny {
        for dx in 0..nx {
            // Safety: the offsets are within the bounds checked above.
            let t = unsafe {
                taps.add((dy * k + dx) * c)
                    .cast::<[f32; DW_LANES]>()
                    .read_unaligned()
            };
            for (px, a) in acc.iter_mut().enumerate() {
                let o = (dy * w + px * s + dx) * c;
                let v = unsafe { img.add(o).cast::<[f32; DW_LANES]>().read_unaligned() };
                for i in 0..DW_LANES {
                    a[i] += v[i] * t[i];
                }
            }
        }
    }
    acc
}

/// Writes `vals` to `dst`, through torch's erf GELU where `gelu`.
#[inline(always)]
fn depthwise_put(dst: &mut [std::mem::MaybeUninit<f32>], vals: &[f32], gelu: bool) {
    for (o, &v) in dst[..vals.len()].iter_mut().zip(vals) {
        o.write(if gelu {
            crate::native::simd::gelu_erf(v)
        } else {
            v
        });
    }
}

simd_fn! {
    /// Output row `y` of [`depthwise_nhwc`] for one image `img` (`[h, w, c]`), channel block
    /// by channel block, [`DW_PIXELS`] pixels at a time where their windows are whole across.
    fn depthwise_nhwc_row(
        img: &[f32],
        y: usize,
        d: Depthwise,
        taps: &[f32],
        bias: &[f32],
        dst: &mut [std::mem::MaybeUninit<f32>],
    ) {
        let Depthwise { h, w, c, k, stride: s, gelu, .. } = d;
        let (_, wo) = d.out_size();
        let half = k / 2;
        // The window's rows inside the image: taps ky0.. (ny of them) from input row iy0.
        let ky0 = half.saturating_sub(y * s);
        let ny = k.min(h + half - y * s) - ky0;
        let iy0 = y * s + ky0 - half;
        let inner = d.inner();
        let full = c - c % DW_LANES;
        let shape = (c, w, s, k);
        // Pixel x's taps inside the image across (the first and how many), its first tap's
        // input (channel 0) and that tap's weights.
        let window = |x: usize| {
            let kx0 = half.saturating_sub(x * s);
            let nx = k.min(w + half - x * s) - kx0;
            (nx, (iy0 * w + x * s + kx0 - half) * c, (ky0 * k + kx0) * c)
        };
        // Channel blocks outermost: a block's weights stay in L1 along the row.
        for c0 in (0..full).step_by(DW_LANES) {
            let b: &[f32; DW_LANES] = bias[c0..c0 + DW_LANES].try_into().unwrap();
            let mut x = 0;
            while x < wo {
                let (nx, at, t0) = window(x);
                if x >= inner.0 && x + DW_PIXELS <= inner.1 {
                    let t = &taps[t0 + c0..];
                    let acc = depthwise_block::<DW_PIXELS>(img, at + c0, shape, t, (ny, nx), b);
                    for (px, a) in acc.iter().enumerate() {
                        depthwise_put(&mut dst[(x + px) * c + c0..], a, gelu);
                    }
                    x += DW_PIXELS;
                } else {
                    let t = &taps[t0 + c0..];
                    let [a] = depthwise_block::<1>(img, at + c0, shape, t, (ny, nx), b);
                    depthwise_put(&mut dst[x * c + c0..], &a, gelu);
                    x += 1;
                }
            }
        }
        if full < c {
            for x in 0..wo {
                let (nx, at, t0) = window(x);
                let mut rest = [0f32; DW_LANES];
                let rest = &mut rest[..c - full];
                rest.copy_from_slice(&bias[full..]);
                for dy in 0..ny {
                    for dx in 0..nx {
                        let o = at + (dy * w + dx) * c;
                        let t = &taps[t0 + (dy * k + dx) * c..][full..c];
                        for ((a, &v), &t) in rest.iter_mut().zip(&img[o + full..o + c]).zip(t) {
                            *a += v * t;
                        }
                    }
                }
                depthwise_put(&mut dst[x * c + full..], rest, gelu);
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
    eps: f32,
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
            layer_norm_chunk(x, ci * rows_per_task, pick, weight, bias, eps, o)
        })
    }
}

/// [`layer_norm_rows`] rounded to bf16 pairs for a bf16 product, each chunk of rows while it
/// is still in cache (the values the product's own packing would make of the f32 rows).
pub fn layer_norm_rows_bf16(
    x: &[f32],
    rows: usize,
    pick: RowPick,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) -> Bf16Rows {
    let d = weight.len();
    if rows > 0 {
        assert!(
            pick.offset(rows - 1) + d <= x.len(),
            "layer_norm_rows: input too short"
        );
    }
    Bf16Rows::build(rows, d, (CHUNK / d.max(1)).max(1), |r0, o| {
        // Safety: the same floats seen as possibly uninitialised, which the chunk only writes
        // with values.
        let o = unsafe { &mut *(o as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) };
        layer_norm_chunk(x, r0, pick, weight, bias, eps, o)
    })
}

simd_fn! {
    fn layer_norm_chunk(
        x: &[f32],
        r0: usize,
        pick: RowPick,
        weight: &[f32],
        bias: &[f32],
        eps: f32,
        o: &mut [std::mem::MaybeUninit<f32>],
    ) {
        let d = weight.len();
        for (ri, orow) in o.chunks_mut(d).enumerate() {
            let at = pick.offset(r0 + ri);
            let row = &x[at..at + d];
            let mean = lane_sum(row, |v| v) / d as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (((o, &v), &w), &b) in orow.iter_mut().zip(row).zip(weight).zip(bias) {
                o.write((v - mean) * inv * w + b);
            }
        }
    }
}

/// Lanes of the softmax's chunks; [`attention`] pads its score rows to a multiple of it.
const SOFTMAX_LANES: usize = 16;

simd_fn! {
    /// Row-wise softmax of `scale * s` over the first `n` columns of rows of `stride` floats
    /// (a multiple of [`SOFTMAX_LANES`], at least `n`); with a causal offset `o`, row i keeps
    /// only columns <= i + o and the rest of its `n` become 0. The scores are read only where
    /// they are live, so the padding and a causal row's dead columns may hold anything.
    fn softmax_rows(s: &mut [f32], stride: usize, n: usize, scale: f32, causal: Option<usize>) {
        const W: usize = SOFTMAX_LANES;
        debug_assert!(stride.is_multiple_of(W) && stride >= n);
        for (i, row) in s.chunks_exact_mut(stride).enumerate() {
            let len = causal.map_or(n, |o| (i + 1 + o).min(n));
            // Whole chunks up to the last live score, its dead lanes masked: no scalar tail
            // (a causal row of a 77-token prompt has 39 live scores on average).
            let used = len.next_multiple_of(W);
            let (live, dead) = row.split_at_mut(used);
            let mut m = [f32::NEG_INFINITY; W];
            for (c, ch) in live.chunks_exact(W).enumerate() {
                for (j, (a, &v)) in m.iter_mut().zip(ch).enumerate() {
                    *a = a.max(if c * W + j < len { v } else { f32::NEG_INFINITY });
                }
            }
            let mx = m.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            let mut acc = [0f32; W];
            for (c, ch) in live.chunks_exact_mut(W).enumerate() {
                for (j, (a, v)) in acc.iter_mut().zip(ch).enumerate() {
                    let e = exp((*v - mx) * scale);
                    *v = if c * W + j < len { e } else { 0.0 };
                    *a += *v;
                }
            }
            let inv = 1.0 / acc.iter().sum::<f32>();
            for v in live.iter_mut() {
                *v *= inv;
            }
            dead[..n.saturating_sub(used)].fill(0.0);
        }
    }
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

/// Which keys each query of [`attention`] sees.
#[derive(Clone, Copy, Debug)]
pub enum Mask<'a> {
    /// Every key.
    None,
    /// Query row i sees keys 0..=i (queries and keys share positions).
    Causal,
    /// Image b's query row i sits at position `at[b] + i` and sees keys up to it: a causal
    /// tower's queries at a chosen position (CLIP's end-of-text token).
    At(&'a [usize]),
    /// Causal, and image b's key j hidden from every query where `hidden[b * keys + j]` (CoCa
    /// text's per-prompt key mask). Key 0 is never hidden, so every query sees one.
    CausalHiding(&'a [bool]),
    /// Every key but image b's key j where `hidden[b * keys + j]` (an HF text tower's pad
    /// positions). Each image keeps one key at least.
    Hiding(&'a [bool]),
    /// `At` and `CausalHiding`'s hidden keys: the new position of stepwise decoding, its
    /// earlier keys hidden as they were from the full prefix's queries.
    AtHiding(&'a [usize], &'a [bool]),
    /// Every key, `bias[(h * q_rows + i) * keys + j]` added to head h's scaled score of query
    /// i and key j (the same for every image: timm's relative-position bias).
    Bias(&'a [f32]),
}

impl Mask<'_> {
    /// Image `b`'s row i sees keys up to i + the offset; None: every key.
    fn offset(self, b: usize) -> Option<usize> {
        match self {
            Mask::None | Mask::Hiding(_) | Mask::Bias(_) => None,
            Mask::Causal | Mask::CausalHiding(_) => Some(0),
            Mask::At(at) | Mask::AtHiding(at, _) => Some(at[b]),
        }
    }
}

/// Multi-head scaled dot-product attention read straight out of the projections (no q/k/v
/// copies): per image and head, `softmax(scale q k^T) v` through the packed gemm, with the
/// result as `[images * q.rows, heads * head_dim]` (row `b * q.rows + i`, columns
/// `h * head_dim..`). `mask` hides the keys after each query's position. The products run on
/// `cfg`'s kernel (the model's).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    cfg: gemm::GemmConfig,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    images: usize,
    heads: usize,
    head_dim: usize,
    mask: Mask,
) -> Vec<f32> {
    f32_rows(
        cfg,
        Qkv::F32([q, k, v]),
        images,
        images * q.rows,
        heads,
        head_dim,
        mask,
    )
}

/// One image's keys (as `k^T`) and values for one head, packed as [`attention`] packs them for
/// its products: what a cross-attention reads at every generation step, packed once.
#[derive(Debug, Clone)]
pub struct PackedHead {
    kt: Weight,
    v: Weight,
}

/// The keys and values of `images` images of `k.rows` rows, per image and head (image b's
/// head h at `b * heads + h`), packed for `cfg` as [`attention`] packs them.
pub fn pack_heads(
    cfg: gemm::GemmConfig,
    k: HeadView,
    v: HeadView,
    images: usize,
    heads: usize,
    head_dim: usize,
) -> Vec<PackedHead> {
    let lk = k.rows;
    (0..images * heads)
        .into_par_iter()
        .map(|t| {
            let (b, h) = (t / heads, t % heads);
            let kb = (b * lk) * k.stride + k.offset + h * head_dim;
            let vb = (b * lk) * v.stride + v.offset + h * head_dim;
            PackedHead {
                kt: Weight::new(cfg, &k.data[kb..], head_dim, lk, 1, k.stride),
                v: Weight::new(cfg, &v.data[vb..], lk, head_dim, v.stride, 1),
            }
        })
        .collect()
}

/// [`attention`] without mask over keys and values packed once ([`pack_heads`]): image b's
/// head h reads `kv[b * heads + h]`, each image `q.rows` queries.
pub fn attention_packed(
    cfg: gemm::GemmConfig,
    q: HeadView,
    kv: &[&PackedHead],
    heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let images = kv.len() / heads.max(1);
    f32_rows(
        cfg,
        Qkv::Packed(q, kv),
        images,
        images * q.rows,
        heads,
        head_dim,
        Mask::None,
    )
}

/// [`attention_to`]'s `rows` results as f32 rows.
fn f32_rows(
    cfg: gemm::GemmConfig,
    qkv: Qkv,
    images: usize,
    rows: usize,
    heads: usize,
    head_dim: usize,
    mask: Mask,
) -> Vec<f32> {
    let d = heads * head_dim;
    let len = rows * d;
    let mut out = Vec::<f32>::with_capacity(len);
    // Safety: `out` holds `rows` rows of d floats, and attention_to writes each.
    unsafe {
        attention_to(
            cfg,
            qkv,
            images,
            heads,
            head_dim,
            mask,
            AttOut::F32(out.as_mut_ptr()),
            d,
        );
        out.set_len(len);
    }
    out
}

/// [`attention`] rounded to the bf16 pairs of the bf16 product it feeds (the output
/// projection), written by the value products' epilogue: the rounding that product's packing
/// applies, so its result is the same, without the f32 rows' write, read and packing pass.
/// `cfg` a bf16 configuration.
#[allow(clippy::too_many_arguments)]
pub fn attention_rows(
    cfg: gemm::GemmConfig,
    q: HeadView,
    k: HeadView,
    v: HeadView,
    images: usize,
    heads: usize,
    head_dim: usize,
    mask: Mask,
) -> Bf16Rows {
    let qkv = Qkv::F32([q, k, v]);
    in_bf16_rows(cfg, qkv, images, images * q.rows, heads, head_dim, mask)
}

/// [`attention_rows`] reading its operands out of the fused q/k/v projection's own bf16 rows
/// (`qkv`: `l` rows an image of `3 * heads * head_dim` values, queries, keys and values in
/// that order; [`super::layers::Linear::rows_to_bf16`]): the queries are read in place, each
/// key's pairs become a column of the score product and the values pair up by key without a
/// conversion. The projection rounds them as the f32 route's packing does, so the result is
/// the same. `head_dim` a multiple of 32 (whole pairs and AMX steps per head).
pub fn attention_pairs(
    cfg: gemm::GemmConfig,
    qkv: &Bf16Rows,
    l: usize,
    heads: usize,
    head_dim: usize,
    mask: Mask,
) -> Bf16Rows {
    assert!(
        head_dim.is_multiple_of(32) && qkv.k() == 3 * heads * head_dim,
        "bf16 q/k/v rows of {} values for {heads} heads of {head_dim}",
        qkv.k()
    );
    let images = qkv.m().checked_div(l).unwrap_or(0);
    assert_eq!(
        images * l,
        qkv.m(),
        "{} q/k/v rows in images of {l}",
        qkv.m()
    );
    let rows = qkv.m();
    in_bf16_rows(cfg, Qkv::Pairs(qkv, l), images, rows, heads, head_dim, mask)
}

/// [`attention_to`]'s `rows` results as [`Bf16Rows`] (`cfg` a bf16 configuration).
fn in_bf16_rows(
    cfg: gemm::GemmConfig,
    qkv: Qkv,
    images: usize,
    rows: usize,
    heads: usize,
    head_dim: usize,
    mask: Mask,
) -> Bf16Rows {
    assert!(cfg.bf16, "bf16 attention rows from an f32 configuration");
    let out = |c16, ldc| {
        // Safety: attention_to writes halves 0..heads * head_dim of every row.
        unsafe {
            attention_to(
                cfg,
                qkv,
                images,
                heads,
                head_dim,
                mask,
                AttOut::Bf16(c16),
                ldc,
            )
        }
    };
    // Safety: as above.
    unsafe { Bf16Rows::written(rows, heads * head_dim, out) }
}

/// Where [`attention_to`] reads its queries, keys and values.
#[derive(Clone, Copy)]
enum Qkv<'a> {
    F32([HeadView<'a>; 3]),
    /// The fused projection's bf16 rows ([`attention_pairs`]), `l` an image.
    Pairs(&'a Bf16Rows, usize),
    /// Queries, and keys and values packed per image and head ([`attention_packed`]).
    Packed(HeadView<'a>, &'a [&'a PackedHead]),
}

/// Where [`attention_to`] writes: f32 rows, or bf16 halves (rows of a [`Bf16Rows`]).
#[derive(Clone, Copy)]
enum AttOut {
    F32(*mut f32),
    Bf16(*mut u16),
}
// Safety: only an address; attention's tasks write disjoint parts of what it points to.
unsafe impl Send for AttOut {}
unsafe impl Sync for AttOut {}

impl AttOut {
    /// `n` elements on (by method, so closures capture the Send wrapper).
    fn at(self, n: usize) -> Self {
        match self {
            Self::F32(p) => Self::F32(p.wrapping_add(n)),
            Self::Bf16(p) => Self::Bf16(p.wrapping_add(n)),
        }
    }
}

/// [`attention`]'s computation, row `i` of the result at `out[i * ldc..]`.
///
/// # Safety
/// `out` valid for writes of `images * q.rows` rows of `ldc >= heads * head_dim` elements,
/// nothing else accessing them; a bf16 `out` only with a bf16 `cfg`.
#[allow(clippy::too_many_arguments)]
unsafe fn attention_to(
    cfg: gemm::GemmConfig,
    qkv: Qkv,
    images: usize,
    heads: usize,
    head_dim: usize,
    mask: Mask,
    out: AttOut,
    ldc: usize,
) {
    let (lq, lk) = match qkv {
        Qkv::F32([q, k, _]) => (q.rows, k.rows),
        Qkv::Pairs(_, l) => (l, l),
        Qkv::Packed(q, kv) => (q.rows, kv.first().map_or(0, |p| p.v.k())),
    };
    let d = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    thread_local! {
        // Packed keys and values and the scores, reused across heads and calls (bf16 pairs
        // under bf16, as autocast runs the attention products in bf16 too).
        static KV: std::cell::RefCell<(Weight, Weight, Vec<f32>)> =
            std::cell::RefCell::new((
                Weight::empty(gemm::GemmConfig::detected()),
                Weight::empty(gemm::GemmConfig::detected()),
                Vec::new(),
            ));
    }
    (0..images * heads).into_par_iter().for_each(|t| {
        KV.with(|kv| {
            let (own_kt, own_vp, s) = &mut *kv.borrow_mut();
            let (b, h) = (t / heads, t % heads);
            // B = k^T: B[c][j] = k[j][c]; the values as they are.
            let (kt, vp): (&Weight, &Weight) = match qkv {
                Qkv::F32([_, k, v]) => {
                    let kb = (b * lk) * k.stride + k.offset + h * head_dim;
                    let vb = (b * lk) * v.stride + v.offset + h * head_dim;
                    own_kt.repack(cfg, &k.data[kb..], head_dim, lk, 1, k.stride);
                    own_vp.repack(cfg, &v.data[vb..], lk, head_dim, v.stride, 1);
                    (own_kt, own_vp)
                }
                Qkv::Pairs(rows, _) => {
                    let (sw, row0) = (rows.stride(), b * lk * rows.stride());
                    let kw = &rows.words()[row0 + (d + h * head_dim) / 2..];
                    own_kt
                        .bf16_for(cfg)
                        .repack_pair_columns(cfg, kw, head_dim, lk, sw);
                    let vh = &rows.halves()[2 * row0 + 2 * d + h * head_dim..];
                    own_vp
                        .bf16_for(cfg)
                        .repack_half_rows(cfg, vh, lk, head_dim, 2 * sw);
                    (own_kt, own_vp)
                }
                Qkv::Packed(_, kv) => (&kv[t].kt, &kv[t].v),
            };
            let dst = out.at(b * lq * ldc + h * head_dim);
            // Causal: query row i sees keys 0..=i, so each band of rows (one register tile)
            // computes its scores only up to the panel holding its last key and sums its
            // probabilities only over the keys it sees (~40% of a 77-token prompt's products).
            // The partial band comes first, where it sees the fewest keys (77 = 7 + 5 x 14:
            // the last band, over all the keys, is then a whole tile read in place).
            // Otherwise one band of every row over every key.
            let (mr, nr) = (kt.row_tile(), kt.panel_width());
            let off = mask.offset(b);
            let band = if off.is_some() { mr } else { lq.max(1) };
            let first = lq % band;
            let bands = || {
                (first > 0).then_some(0..first).into_iter().chain(
                    (first..lq)
                        .step_by(band)
                        .map(move |r0| r0..(r0 + band).min(lq)),
                )
            };
            let seen = |r1: usize| off.map_or(lk, |o| (r1 + o).min(lk));
            // Rows padded to whole softmax chunks; every score a row's softmax reads is
            // written by the products first.
            let ls = lk.next_multiple_of(SOFTMAX_LANES);
            if s.len() < lq * ls {
                s.resize(lq * ls, 0.0);
            }
            let s = &mut s[..lq * ls];
            for rows in bands() {
                let (r0, r1) = (rows.start, rows.end);
                let c1 = (seen(r1).div_ceil(nr) * nr).min(lk);
                let sp = s.as_mut_ptr().wrapping_add(r0 * ls);
                // Safety: rows r0..r1 of `s` hold ls >= c1 floats each; the queries' rows
                // lie inside the projection's (bf16: padded for AMX's whole blocks).
                match qkv {
                    Qkv::F32([q, ..]) | Qkv::Packed(q, _) => unsafe {
                        let qb = (b * lq + r0) * q.stride + q.offset + h * head_dim;
                        let a = &q.data[qb..];
                        kt.gemm_ptr(r1 - r0, a, q.stride, 0..c1, sp, ls, &Epilogue::NONE, false)
                    },
                    Qkv::Pairs(rows, _) => unsafe {
                        let sw = rows.stride();
                        let a = &rows.words()[(b * lq + r0) * sw + h * head_dim / 2..];
                        let hd = head_dim;
                        kt.gemm_pairs_ptr(r1 - r0, a, sw, hd, 0..c1, sp, ls, &Epilogue::NONE, false)
                    },
                }
            }
            let hiding = match mask {
                Mask::CausalHiding(hidden) | Mask::Hiding(hidden) | Mask::AtHiding(_, hidden) => {
                    Some(hidden)
                }
                Mask::None | Mask::Causal | Mask::At(_) | Mask::Bias(_) => None,
            };
            if let Some(hidden) = hiding {
                // A hidden key's score becomes -inf: its weight is exp's floor (~1e-38), below
                // any f32 sum's resolution.
                let hidden = &hidden[b * lk..(b + 1) * lk];
                for (i, row) in s.chunks_exact_mut(ls).enumerate() {
                    for (v, _) in row
                        .iter_mut()
                        .zip(hidden)
                        .take(seen(i + 1))
                        .filter(|(_, &h)| h)
                    {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
            // A bias joins the scaled scores (timm adds it after scaling), so the softmax then
            // takes them as they are.
            let scale = match mask {
                Mask::Bias(bias) => {
                    let bias = &bias[h * lq * lk..(h + 1) * lq * lk];
                    for (row, b) in s.chunks_exact_mut(ls).zip(bias.chunks_exact(lk)) {
                        for (v, &b) in row.iter_mut().zip(b) {
                            *v = *v * scale + b;
                        }
                    }
                    1.0
                }
                _ => scale,
            };
            // Reads only the scores a row sees (written above) and zeroes the rest.
            softmax_rows(s, ls, lk, scale, off);
            for rows in bands() {
                let (r0, r1) = (rows.start, rows.end);
                let (a, depth) = (&s[r0 * ls..], seen(r1));
                // Safety: each task writes its own head's columns of its own image's rows,
                // inside `out` (the caller's contract); depth <= lk rows of values.
                unsafe {
                    match dst.at(r0 * ldc) {
                        AttOut::F32(c) => vp.gemm_ptr_depth(
                            r1 - r0,
                            a,
                            ls,
                            depth,
                            0..head_dim,
                            c,
                            ldc,
                            &Epilogue::NONE,
                            false,
                        ),
                        AttOut::Bf16(c) => vp.gemm_ptr_depth_to_bf16(
                            r1 - r0,
                            a,
                            ls,
                            depth,
                            0..head_dim,
                            c,
                            ldc,
                            &Epilogue::NONE,
                            false,
                        ),
                    }
                };
            }
        })
    });
}

/// Each image's mean over its `l` tokens of `[n * l, d]` rows, the first `skip` left out
/// (CLIPA's class token), summed in f64 so the order of the sum does not show.
pub fn token_means(x: &[f32], n: usize, l: usize, skip: usize, d: usize) -> Vec<f32> {
    let count = l.saturating_sub(skip).max(1) as f64;
    let mut out = vec![0f32; n * d];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(l * d))
        .for_each(|(o, img)| {
            let mut acc = vec![0f64; d];
            for row in img[skip * d..].chunks(d) {
                acc.iter_mut()
                    .zip(row)
                    .for_each(|(a, &v)| *a += f64::from(v));
            }
            o.iter_mut()
                .zip(&acc)
                .for_each(|(o, &a)| *o = (a / count) as f32);
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The depthwise convolution handed to a bf16 product as pairs gives that product's
    /// result through the in-place f32 route bit for bit (one register block plus a
    /// remainder of channels, one-pixel and wider grids, AMX's layout emulated too).
    #[test]
    fn depthwise_rows_in_bf16_equal_the_in_place_route() {
        use crate::native::bf16::{self, Bf16Weight};
        if !bf16::supported() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 depthwise rows not tested");
            return;
        }
        use crate::native::bf16::{bits, test_values as vals};
        for (n, g, c) in [(2, 5, DW_BLOCK + 6), (3, 1, 40), (1, 7, DW_BLOCK)] {
            let buf = vals(n * g * g * c, 1);
            let taps: Vec<Vec<f32>> = (0..9).map(|t| vals(c, 10 + t)).collect();
            let bias = vals(c, 2);
            let mut f = buf.clone();
            depthwise3x3_gelu_inplace(&mut f, n, g, c, &taps, &bias);
            let r = depthwise3x3_gelu_bf16(&buf, n, g, c, &taps, &bias);
            let m = n * g * g;
            for amx in [false, true] {
                let cfg = gemm::GemmConfig {
                    bf16: true,
                    amx,
                    ..gemm::GemmConfig::detected()
                };
                let w = Bf16Weight::from_linear_weight(cfg, &vals(33 * c, 3), 33, c);
                let mut want = vec![f32::NAN; m * 33];
                bf16::gemm(m, &f, c, &w, 0..33, &mut want, 33, &Epilogue::NONE, true);
                let got = bf16::gemm_rows(&r, &w, &Epilogue::NONE, true);
                assert_eq!(bits(&got), bits(&want), "n {n} g {g} c {c} amx {amx}");
            }
        }
    }

    /// Attention handed to the output projection as bf16 pairs gives that product's result
    /// through the f32 rows bit for bit: causal bands and whole rows, head widths off the
    /// pairs and panels (odd, 8, 40), one and several images, AMX's layout emulated too.
    #[test]
    fn attention_rows_in_bf16_equal_the_f32_hand_over() {
        use crate::native::bf16::{self, Bf16Weight};
        if !bf16::supported() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 attention rows not tested");
            return;
        }
        use crate::native::bf16::{bits, test_values as vals};
        let heads = 3;
        for amx in [false, true] {
            let cfg = gemm::GemmConfig {
                bf16: true,
                amx,
                ..gemm::GemmConfig::detected()
            };
            for (hd, n, l, mask) in [
                (8, 2, 77, Mask::Causal),
                (7, 1, 15, Mask::Causal),
                (40, 2, 50, Mask::None),
                (8, 3, 1, Mask::None),
            ] {
                let d = heads * hd;
                let qkv = vals(n * l * 3 * d, 5);
                let view = |offset| HeadView {
                    data: &qkv,
                    rows: l,
                    stride: 3 * d,
                    offset,
                };
                let (q, k, v) = (view(0), view(d), view(2 * d));
                let f = attention(cfg, q, k, v, n, heads, hd, mask);
                let r = attention_rows(cfg, q, k, v, n, heads, hd, mask);
                let w = Bf16Weight::from_linear_weight(cfg, &vals(37 * d, 6), 37, d);
                let (res, bias) = (vals(n * l * 37, 7), vals(37, 8));
                let epi = Epilogue {
                    bias: Some(&bias),
                    residual: Some((&res, 37)),
                    act: gemm::Act::None,
                };
                let mut want = vec![f32::NAN; n * l * 37];
                bf16::gemm(n * l, &f, d, &w, 0..37, &mut want, 37, &epi, true);
                let got = bf16::gemm_rows(&r, &w, &epi, true);
                assert_eq!(bits(&got), bits(&want), "hd {hd} n {n} l {l} amx {amx}");
            }
        }
    }

    /// Attention over keys and values packed once per image and head equals attention that
    /// packs them itself, bit for bit, in fp32 and (where the CPU has it) bf16, with one and
    /// several queries an image and an image's heads read in another order.
    #[test]
    fn attention_over_packed_heads_equals_attention() {
        use crate::native::bf16::{bits, test_values as vals};
        for cfg in crate::native::bf16::configs_to_test() {
            for (hd, heads, images, lq, lk) in
                [(64, 2, 3, 2, 255), (32, 3, 2, 1, 7), (16, 1, 1, 5, 50)]
            {
                let d = heads * hd;
                let q = vals(images * lq * d, 1);
                let kv = vals(images * lk * 2 * d, 2);
                let qv = HeadView {
                    data: &q,
                    rows: lq,
                    stride: d,
                    offset: 0,
                };
                let view = |offset| HeadView {
                    data: &kv,
                    rows: lk,
                    stride: 2 * d,
                    offset,
                };
                let want = attention(cfg, qv, view(0), view(d), images, heads, hd, Mask::None);
                let packed = pack_heads(cfg, view(0), view(d), images, heads, hd);
                let refs: Vec<&PackedHead> = packed.iter().collect();
                let got = attention_packed(cfg, qv, &refs, heads, hd);
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "hd {hd} heads {heads} bf16 {}",
                    cfg.bf16
                );
                // The images in reverse: each reads its own heads wherever they sit.
                let rev: Vec<&PackedHead> = (0..images)
                    .rev()
                    .flat_map(|b| &packed[b * heads..(b + 1) * heads])
                    .collect();
                let q_rev: Vec<f32> = q.chunks(lq * d).rev().flatten().copied().collect();
                let got = attention_packed(cfg, HeadView { data: &q_rev, ..qv }, &rev, heads, hd);
                let want_rev: Vec<f32> = want.chunks(lq * d).rev().flatten().copied().collect();
                assert_eq!(bits(&got), bits(&want_rev));
            }
        }
    }

    /// Attention read out of the projection's bf16 rows equals attention on its f32 output
    /// rounded by the products' packing, bit for bit: the queries in place, the keys as pair
    /// columns, the values paired by key. Images shorter than an AMX block (whose blocks read
    /// the next image's rows and the padding), causal and full, AMX emulated too.
    #[test]
    fn attention_from_bf16_projection_rows_equals_the_f32_route() {
        use crate::native::bf16::{self, Bf16Weight};
        if !bf16::supported() {
            eprintln!("no AVX512-BF16 on this CPU: bf16 q/k/v rows not tested");
            return;
        }
        use crate::native::bf16::test_values as vals;
        for amx in [false, true] {
            let cfg = gemm::GemmConfig {
                bf16: true,
                amx,
                ..gemm::GemmConfig::detected()
            };
            for (hd, heads, n, l, mask) in [
                (32, 2, 3, 5, Mask::Causal),
                (64, 2, 2, 77, Mask::Causal),
                (32, 3, 2, 50, Mask::None),
                (64, 1, 3, 1, Mask::None),
            ] {
                let d = heads * hd;
                let (m, width) = (n * l, 40);
                let x = vals(m * width, 3);
                let w = Bf16Weight::from_linear_weight(cfg, &vals(3 * d * width, 4), 3 * d, width);
                let bias = vals(3 * d, 5);
                let epi = Epilogue::bias(Some(&bias), gemm::Act::None);
                let mut f = vec![f32::NAN; m * 3 * d];
                bf16::gemm(m, &x, width, &w, 0..3 * d, &mut f, 3 * d, &epi, true);
                let r = bf16::gemm_to_rows(m, &x, width, &w, &epi, true);
                let view = |offset| HeadView {
                    data: &f,
                    rows: l,
                    stride: 3 * d,
                    offset,
                };
                let want = attention_rows(cfg, view(0), view(d), view(2 * d), n, heads, hd, mask);
                let got = attention_pairs(cfg, &r, l, heads, hd, mask);
                let rows = m * got.stride();
                assert_eq!(
                    got.words()[..rows],
                    want.words()[..rows],
                    "hd {hd} heads {heads} n {n} l {l} amx {amx}"
                );
            }
        }
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
        // In bf16 (where the CPU has it) too: products of bf16-rounded operands, so the
        // bound is bf16's (~3 significant digits), against 1e-5 in f32.
        let mut cases = vec![(gemm::GemmConfig::detected(), 1e-5)];
        if super::super::bf16::supported() {
            let bf16 = gemm::GemmConfig {
                bf16: true,
                ..gemm::GemmConfig::detected()
            };
            cases.push((bf16, 2e-2));
        }
        // Head widths under and at a 32-column panel.
        let heads = 3;
        for (cfg, tol) in cases {
            for hd in [8, 32] {
                let d = heads * hd;
                // Causal with hidden keys too (CoCa's text): every third key but the first;
                // hidden keys alone (an HF text tower's padding); a bias per head, query and
                // key (timm's relative positions).
                for (n, l, causal, hiding, biased) in [
                    (2, 21, false, true, false),
                    (2, 77, true, false, false),
                    (1, 15, true, false, false),
                    (2, 5, true, false, false),
                    (2, 50, false, false, false),
                    (2, 77, true, true, false),
                    (2, 20, true, true, false),
                    (2, 17, false, false, true),
                ] {
                    let val = |i: usize| ((i * 7919 % 1009) as f32 / 504.5) - 1.0;
                    let hidden: Vec<bool> = (0..n * l)
                        .map(|k| hiding && k % l > 0 && (k + k / l) % 3 == 2)
                        .collect();
                    let qkv: Vec<f32> = (0..n * l * 3 * d).map(val).collect();
                    let view = |offset| HeadView {
                        data: &qkv,
                        rows: l,
                        stride: 3 * d,
                        offset,
                    };
                    let bias: Vec<f32> = (0..heads * l * l).map(|i| 2.0 * val(i + 5)).collect();
                    let mask = match (causal, hiding) {
                        _ if biased => Mask::Bias(&bias),
                        (true, true) => Mask::CausalHiding(&hidden),
                        (true, false) => Mask::Causal,
                        (false, true) => Mask::Hiding(&hidden),
                        _ => Mask::None,
                    };
                    let got = attention(cfg, view(0), view(d), view(2 * d), n, heads, hd, mask);
                    let scale = 1.0 / (hd as f64).sqrt();
                    for b in 0..n {
                        for h in 0..heads {
                            let at = |i: usize, part: usize, c: usize| {
                                qkv[(b * l + i) * 3 * d + part * d + h * hd + c] as f64
                            };
                            for i in 0..l {
                                let upto = if causal { i + 1 } else { l };
                                let keys: Vec<usize> =
                                    (0..upto).filter(|&j| !hidden[b * l + j]).collect();
                                let s: Vec<f64> = keys
                                    .iter()
                                    .map(|&j| {
                                        (0..hd).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>()
                                    })
                                    .zip(&keys)
                                    .map(|(x, &j)| {
                                        let b = if biased {
                                            f64::from(bias[(h * l + i) * l + j])
                                        } else {
                                            0.0
                                        };
                                        x * scale + b
                                    })
                                    .collect();
                                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                                let z: f64 = e.iter().sum();
                                for c in 0..hd {
                                    let want: f64 = keys
                                        .iter()
                                        .zip(&e)
                                        .map(|(&j, e)| e / z * at(j, 2, c))
                                        .sum();
                                    let v = got[(b * l + i) * d + h * hd + c] as f64;
                                    assert!(
                                        (v - want).abs() < tol,
                                        "{n} {l} {causal} {hiding} bf16 {}: {v} vs {want}",
                                        cfg.bf16
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn depthwise_nhwc_matches_a_direct_convolution() {
        // A register block of channels plus a remainder, and a remainder alone; windows
        // clipped on every side (grids smaller than the kernel too); strides 1 and 2 on odd
        // and even sides; with and without GELU; both routes (pixel by pixel, pixel blocks).
        for (n, h, w, c, k, s, gelu) in [
            (2, 5, 6, DW_BLOCK + 7, 7, 1, false),
            (1, 9, 4, 10, 3, 1, true),
            (1, 2, 3, 5, 7, 1, false),
            (2, 7, 6, DW_BLOCK + 3, 3, 2, true),
            (1, 6, 5, 9, 7, 2, false),
            (1, 1, 2, 4, 3, 2, false),
            // Wide enough for the pixel blocks of the 5x5 and 7x7 route.
            (2, 4, 13, 2 * DW_LANES + 5, 7, 1, true),
            (1, 5, 17, 19, 5, 2, false),
            (1, 3, 12, 3, 7, 1, false),
        ] {
            let val = |i: usize| ((i * 7919 % 1013) as f32 / 101.3) - 5.0;
            let x: Vec<f32> = (0..n * h * w * c).map(val).collect();
            let taps: Vec<f32> = (0..k * k * c).map(|i| val(i + 17) / 10.0).collect();
            let bias: Vec<f32> = (0..c).map(|i| val(i + 3)).collect();
            let d = Depthwise {
                n,
                h,
                w,
                c,
                k,
                stride: s,
                gelu,
            };
            let got = depthwise_nhwc(&x, d, &taps, &bias);
            let (ho, wo) = ((h - 1) / s + 1, (w - 1) / s + 1);
            assert_eq!(d.out_size(), (ho, wo));
            assert_eq!(got.len(), n * ho * wo * c);
            let half = (k / 2) as isize;
            for b in 0..n {
                for y in 0..ho {
                    for xx in 0..wo {
                        for ch in 0..c {
                            let mut want = bias[ch] as f64;
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (y * s) as isize + ky as isize - half;
                                    let ix = (xx * s) as isize + kx as isize - half;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let at = ((b * h + iy as usize) * w + ix as usize) * c + ch;
                                    want += x[at] as f64 * taps[(ky * k + kx) * c + ch] as f64;
                                }
                            }
                            if gelu {
                                want = crate::native::simd::reference::gelu(want);
                            }
                            let v = got[((b * ho + y) * wo + xx) * c + ch] as f64;
                            assert!(
                                (v - want).abs() < 1e-4,
                                "{n} {h} {w} {c} {k} {s}: {v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_rows_match_f64_softmax() {
        // Rows padded to 48 with NaN, which must never reach a live score: in the padding
        // and, causal, in the dead columns (the products leave them unwritten).
        for causal in [false, true] {
            let (rows, n, stride) = (20, 37, 48);
            let val = |i: usize| ((i * 7919 % 1013) as f32 / 101.3) - 5.0;
            let x: Vec<f32> = (0..rows * stride)
                .map(|i| {
                    let (r, c) = (i / stride, i % stride);
                    let live = c < n && (!causal || c <= r);
                    if live {
                        val(i)
                    } else {
                        f32::NAN
                    }
                })
                .collect();
            let mut got = x.clone();
            softmax_rows(&mut got, stride, n, 0.5, causal.then_some(0));
            for r in 0..rows {
                let seen = if causal { r + 1 } else { n };
                let row = &x[r * stride..r * stride + seen];
                let mx = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                let e: Vec<f64> = row.iter().map(|&v| ((v as f64 - mx) * 0.5).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..n {
                    let want = if c < seen { e[c] / z } else { 0.0 };
                    let v = got[r * stride + c] as f64;
                    assert!((v - want).abs() < 1e-6, "{causal} {r} {c}: {v} vs {want}");
                }
            }
        }
    }
}
