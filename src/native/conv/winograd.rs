//! Winograd F(2x2, 3x3) for the ResNet's 3x3, stride-1, padding-1 convolutions on the CPU
//! (channels-last). Each 2x2 block of outputs comes from a 4x4 input tile: the tiles are
//! transformed (`B^T d B`), multiplied per transform element by the transformed weights
//! (`G g G^T`, prepared at load) as 16 independent gemms over channels, and transformed back
//! (`A^T m A`) with the bias, the residual and ReLU applied on the way out. 16 products per
//! 4 outputs instead of 36; the transforms are additions over whole channel vectors.

use super::nhwc::Nhwc;
use crate::native::gemm::{self, Epilogue, GemmConfig};
use crate::native::simd::simd_fn;
use crate::native::weight::Weight;
use rayon::prelude::*;

/// Tiles per task for f32 products: a multiple of both FMA kernels' row counts (6 and 14), so
/// the gemms have no partial row panels, and small enough for the transformed tiles to stay in
/// L2.
const TILES_F32: usize = 84;

/// Tiles per task for bf16 products: a multiple of the `vdpbf16ps` tile's 8 rows and of AMX's
/// 32-row blocks (84 left a 4-row tile and, on AMX, 12 padding rows in every product).
const TILES_BF16: usize = 96;

#[derive(Debug, Clone)]
pub struct Winograd {
    /// `G g G^T` for each of the 16 transform elements, as `[c_in, c_out]`.
    u: Vec<Weight>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    /// Tiles per task ([`TILES_F32`] or [`TILES_BF16`], by the products' precision).
    tiles: usize,
}

impl Winograd {
    /// Whether the element products round to bf16.
    pub fn bf16(&self) -> bool {
        self.u.iter().any(|u| matches!(u, Weight::Bf16(_)))
    }

    /// From an OIHW 3x3 weight and a bias.
    pub fn new(cfg: GemmConfig, oihw: &[f32], bias: Vec<f32>, c_out: usize, c_in: usize) -> Self {
        // G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
        const G: [[f32; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let mut u = vec![vec![0f32; c_in * c_out]; 16];
        for o in 0..c_out {
            for i in 0..c_in {
                let g = &oihw[(o * c_in + i) * 9..(o * c_in + i) * 9 + 9];
                // tmp = G g (4x3), then tmp G^T (4x4).
                let mut tmp = [[0f32; 3]; 4];
                for (r, gr) in G.iter().enumerate() {
                    for c in 0..3 {
                        tmp[r][c] = (0..3).map(|k| gr[k] * g[k * 3 + c]).sum();
                    }
                }
                for r in 0..4 {
                    for (c, gc) in G.iter().enumerate() {
                        let v: f32 = (0..3).map(|k| tmp[r][k] * gc[k]).sum();
                        u[r * 4 + c][i * c_out + o] = v;
                    }
                }
            }
        }
        Self {
            u: u.iter()
                .map(|m| Weight::new(cfg, m, c_in, c_out, c_out, 1))
                .collect(),
            bias,
            c_in,
            c_out,
            // `Weight::new` packs bf16 exactly when the configuration asks for it.
            tiles: if cfg.bf16 { TILES_BF16 } else { TILES_F32 },
        }
    }

    /// `relu?(conv3x3(x) + bias + residual?)`, same size as the input.
    pub fn forward(&self, x: &Nhwc, residual: Option<&Nhwc>, relu: bool) -> Nhwc {
        assert_eq!(x.c, self.c_in);
        let (h, w, ci, co, per) = (x.h, x.w, self.c_in, self.c_out, self.tiles);
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let tiles = x.n * th * tw;
        let len = x.n * h * w * co;
        let mut out = Vec::<f32>::with_capacity(len);
        let optr = gemm::SendPtr(out.as_mut_ptr());
        let chunks = tiles.div_ceil(per);
        (0..chunks).into_par_iter().for_each(|chunk| {
            let t0 = chunk * per;
            let nt = per.min(tiles - t0);
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let (v, m, y, zero) = &mut *scratch;
                // Transformed input tiles [16][per][ci] and products [16][per][co]; rows past
                // `nt` are never read.
                v.resize(16 * per * ci, 0.0);
                m.resize(16 * per * co, 0.0);
                y.resize(4 * co, 0.0);
                zero.clear();
                zero.resize(ci, 0.0);
                let zero = &zero[..];
                for t in 0..nt {
                    let (b, ty, tx) = tile_pos(t0 + t, th, tw);
                    let px = |r: usize, c: usize| -> &[f32] {
                        let (iy, ix) = ((2 * ty + r) as isize - 1, (2 * tx + c) as isize - 1);
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            zero
                        } else {
                            let at = ((b * h + iy as usize) * w + ix as usize) * ci;
                            &x.data[at..at + ci]
                        }
                    };
                    let d: [[&[f32]; 4]; 4] =
                        std::array::from_fn(|r| std::array::from_fn(|c| px(r, c)));
                    input_transform(&d, v, t, per, ci);
                }
                // m_e = v_e @ u_e for the 16 elements.
                for e in 0..16 {
                    let a = &v[e * per * ci..(e * per + nt) * ci];
                    let c = &mut m[e * per * co..(e * per + nt) * co];
                    self.u[e].gemm(nt, a, ci, 0..co, c, co, &Epilogue::NONE, false);
                }
                for t in 0..nt {
                    let (b, ty, tx) = tile_pos(t0 + t, th, tw);
                    output_transform(m, t, per, co, &self.bias, y);
                    for dy in 0..2 {
                        for dx in 0..2 {
                            let (oy, ox) = (2 * ty + dy, 2 * tx + dx);
                            if oy >= h || ox >= w {
                                continue;
                            }
                            let at = ((b * h + oy) * w + ox) * co;
                            // Safety: each output pixel belongs to exactly one tile, and each
                            // tile to one task.
                            let dst =
                                unsafe { std::slice::from_raw_parts_mut(optr.get().add(at), co) };
                            let src = &y[(dy * 2 + dx) * co..(dy * 2 + dx + 1) * co];
                            finish(dst, src, residual.map(|r| &r.data[at..at + co]), relu);
                        }
                    }
                }
            });
        });
        // Safety: every output pixel lies in exactly one tile and was written above.
        unsafe { out.set_len(len) };
        Nhwc {
            data: out,
            n: x.n,
            h,
            w,
            c: co,
        }
    }
}

type Scratch = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new()))
    };
}

fn tile_pos(t: usize, th: usize, tw: usize) -> (usize, usize, usize) {
    (t / (th * tw), (t / tw) % th, t % tw)
}

/// Channels handled together by the transforms (whole vectors of them, so they vectorise).
const LANES: usize = 16;

simd_fn! {
    /// `dst = relu?(src + residual?)`.
    fn finish(dst: &mut [f32], src: &[f32], res: Option<&[f32]>, relu: bool) {
        match res {
            Some(r) => {
                for ((o, &a), &b) in dst.iter_mut().zip(src).zip(r) {
                    *o = if relu { (a + b).max(0.0) } else { a + b };
                }
            }
            None => {
                for (o, &a) in dst.iter_mut().zip(src) {
                    *o = if relu { a.max(0.0) } else { a };
                }
            }
        }
    }
}

simd_fn! {
/// `B^T d B` for one tile into element `e`'s row `t` of `v` (`v[e][t][..]`, `per` rows an
/// element), channel-wise.
/// Whole vectors of channels go through fixed-size arrays straight from the pixels to `v`, so
/// they stay in registers (copying through zero-initialised partial buffers kept them on the
/// stack: 12% of an RN50 bf16 run); a ragged last group goes through padded copies.
fn input_transform(d: &[[&[f32]; 4]; 4], v: &mut [f32], t: usize, per: usize, ci: usize) {
    let mut c0 = 0;
    while c0 + LANES <= ci {
        // Plain loops, not array::from_fn: its closures were not inlined here.
        let mut g = [[[0f32; LANES]; 4]; 4];
        for r in 0..4 {
            for k in 0..4 {
                g[r][k] = lanes(&d[r][k][c0..]);
            }
        }
        for (e, o) in input_tile(&g).iter().enumerate() {
            let at = e * per * ci + t * ci + c0;
            v[at..at + LANES].copy_from_slice(o);
        }
        c0 += LANES;
    }
    if c0 < ci {
        let n = ci - c0;
        let mut g = [[[0f32; LANES]; 4]; 4];
        for r in 0..4 {
            for k in 0..4 {
                g[r][k][..n].copy_from_slice(&d[r][k][c0..ci]);
            }
        }
        for (e, o) in input_tile(&g).iter().enumerate() {
            let at = e * per * ci + t * ci + c0;
            v[at..at + n].copy_from_slice(&o[..n]);
        }
    }
}
}

/// `B^T g B` lane-wise, element `r * 4 + k` of the result at index `r * 4 + k`.
/// B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
#[inline(always)]
fn input_tile(g: &[[[f32; LANES]; 4]; 4]) -> [[f32; LANES]; 16] {
    // tmp = B^T g (rows), then tmp B (columns).
    let mut tmp = [[[0f32; LANES]; 4]; 4];
    for k in 0..4 {
        for l in 0..LANES {
            tmp[0][k][l] = g[0][k][l] - g[2][k][l];
            tmp[1][k][l] = g[1][k][l] + g[2][k][l];
            tmp[2][k][l] = g[2][k][l] - g[1][k][l];
            tmp[3][k][l] = g[1][k][l] - g[3][k][l];
        }
    }
    let mut o = [[0f32; LANES]; 16];
    for (r, tr) in tmp.iter().enumerate() {
        for l in 0..LANES {
            o[r * 4][l] = tr[0][l] - tr[2][l];
            o[r * 4 + 1][l] = tr[1][l] + tr[2][l];
            o[r * 4 + 2][l] = tr[2][l] - tr[1][l];
            o[r * 4 + 3][l] = tr[1][l] - tr[3][l];
        }
    }
    o
}

simd_fn! {
/// `A^T m A + bias` for tile `t`: the four outputs `y[dy * 2 + dx][..co]`, whole vectors of
/// channels through fixed-size arrays as in [`input_transform`].
fn output_transform(m: &[f32], t: usize, per: usize, co: usize, bias: &[f32], y: &mut [f32]) {
    let at = |e: usize, c0: usize| e * per * co + t * co + c0;
    let mut c0 = 0;
    while c0 + LANES <= co {
        let mut g = [[[0f32; LANES]; 4]; 4];
        for r in 0..4 {
            for k in 0..4 {
                g[r][k] = lanes(&m[at(r * 4 + k, c0)..]);
            }
        }
        let b = lanes(&bias[c0..]);
        for (q, o) in output_tile(&g).iter().enumerate() {
            let dst: &mut [f32; LANES] = (&mut y[q * co + c0..q * co + c0 + LANES]).try_into().unwrap();
            for l in 0..LANES {
                dst[l] = o[l] + b[l];
            }
        }
        c0 += LANES;
    }
    if c0 < co {
        let n = co - c0;
        let mut g = [[[0f32; LANES]; 4]; 4];
        for (r, gr) in g.iter_mut().enumerate() {
            for (k, gk) in gr.iter_mut().enumerate() {
                let a = at(r * 4 + k, c0);
                gk[..n].copy_from_slice(&m[a..a + n]);
            }
        }
        for (q, o) in output_tile(&g).iter().enumerate() {
            for ((y, &v), &b) in y[q * co + c0..q * co + co].iter_mut().zip(&o[..n]).zip(&bias[c0..co]) {
                *y = v + b;
            }
        }
    }
}
}

/// `A^T g A` lane-wise, output `dy * 2 + dx` at that index.
/// A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
#[inline(always)]
fn output_tile(g: &[[[f32; LANES]; 4]; 4]) -> [[f32; LANES]; 4] {
    // s = A^T g (2x4), then s A (2x2).
    let mut s = [[[0f32; LANES]; 4]; 2];
    for k in 0..4 {
        for l in 0..LANES {
            s[0][k][l] = g[0][k][l] + g[1][k][l] + g[2][k][l];
            s[1][k][l] = g[1][k][l] - g[2][k][l] - g[3][k][l];
        }
    }
    let mut o = [[0f32; LANES]; 4];
    for (dy, sr) in s.iter().enumerate() {
        for l in 0..LANES {
            o[dy * 2][l] = sr[0][l] + sr[1][l] + sr[2][l];
            o[dy * 2 + 1][l] = sr[1][l] - sr[2][l] - sr[3][l];
        }
    }
    o
}

/// The first `LANES` values of `s`.
#[inline(always)]
fn lanes(s: &[f32]) -> [f32; LANES] {
    s[..LANES].try_into().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3x3 convolution, padding 1, in f64.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &Nhwc,
        w: &[f32],
        bias: &[f32],
        co: usize,
        res: Option<&Nhwc>,
        relu: bool,
    ) -> Vec<f32> {
        let (h, wd, ci) = (x.h, x.w, x.c);
        let mut out = vec![0f32; x.n * h * wd * co];
        for b in 0..x.n {
            for y in 0..h {
                for xx in 0..wd {
                    for o in 0..co {
                        let mut s = bias[o] as f64;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (y as isize + ky - 1, xx as isize + kx - 1);
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let at = ((b * h + iy as usize) * wd + ix as usize) * ci;
                                for i in 0..ci {
                                    let wv = w[((o * ci + i) * 3 + ky as usize) * 3 + kx as usize];
                                    s += x.data[at + i] as f64 * wv as f64;
                                }
                            }
                        }
                        let at = ((b * h + y) * wd + xx) * co + o;
                        if let Some(r) = res {
                            s += r.data[at] as f64;
                        }
                        out[at] = if relu { s.max(0.0) as f32 } else { s as f32 };
                    }
                }
            }
        }
        out
    }

    /// The tiles per task only cut the work into tasks: every row of every product is the
    /// same dot product, so any cut gives the same bits, in f32 and in bf16 (AMX emulated in
    /// tests); bf16 also stays close to the direct convolution.
    #[test]
    fn tiles_per_task_leave_the_results_unchanged() {
        let val = |i: usize| ((i * 7919 % 1009) as f32 / 500.0) - 1.0;
        let (n, h, w, ci, co) = (2, 21, 19, 24, 40);
        let x = Nhwc {
            data: (0..n * h * w * ci).map(val).collect(),
            n,
            h,
            w,
            c: ci,
        };
        let wt: Vec<f32> = (0..co * ci * 9).map(|i| val(i + 5) / 8.0).collect();
        let bias: Vec<f32> = (0..co).map(|i| val(i + 11)).collect();
        let mut cfgs = vec![(GemmConfig::detected(), TILES_F32)];
        if crate::native::bf16::supported() {
            let bf16 = GemmConfig {
                bf16: true,
                ..GemmConfig::detected()
            };
            cfgs.push((bf16, TILES_BF16));
            cfgs.push((GemmConfig { amx: true, ..bf16 }, TILES_BF16));
        }
        let want = direct(&x, &wt, &bias, co, None, true);
        for (cfg, per) in cfgs {
            let mut wg = Winograd::new(cfg, &wt, bias.clone(), co, ci);
            assert_eq!((wg.tiles, wg.bf16()), (per, cfg.bf16));
            let first = wg.forward(&x, None, true);
            // 220 tiles: two or three tasks, the last one partial.
            for other in [84, 96, 37] {
                wg.tiles = other;
                let got = wg.forward(&x, None, true);
                assert!(
                    got.data == first.data,
                    "{per} vs {other} tiles, bf16 {}",
                    cfg.bf16
                );
            }
            let worst = crate::native::conv::max_abs_diff(&first.data, &want);
            let bound = if cfg.bf16 { 5e-2 } else { 1e-4 };
            assert!(worst < bound, "bf16 {}: {worst}", cfg.bf16);
        }
    }

    #[test]
    fn matches_direct_convolution() {
        let mut st = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    st ^= st << 13;
                    st ^= st >> 7;
                    st ^= st << 17;
                    ((st >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect()
        };
        // Even and odd sizes (partial tiles), channel counts off the 16-lane width, more
        // tiles than one task holds.
        for (n, h, w, ci, co) in [(1, 6, 6, 16, 32), (2, 7, 5, 40, 24), (1, 19, 17, 8, 70)] {
            let x = Nhwc {
                data: rnd(n * h * w * ci),
                n,
                h,
                w,
                c: ci,
            };
            let wt = rnd(co * ci * 9);
            let bias = rnd(co);
            let res = Nhwc {
                data: rnd(n * h * w * co),
                n,
                h,
                w,
                c: co,
            };
            let wg = Winograd::new(GemmConfig::detected(), &wt, bias.clone(), co, ci);
            for (r, relu) in [(None, false), (Some(&res), true)] {
                let got = wg.forward(&x, r, relu);
                let want = direct(&x, &wt, &bias, co, r, relu);
                let worst = crate::native::conv::max_abs_diff(&got.data, &want);
                assert!(worst < 1e-4, "{n}x{h}x{w} {ci}->{co}: {worst}");
            }
        }
    }
}
