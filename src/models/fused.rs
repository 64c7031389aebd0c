//! The candle engine's fused operations: bias with activation (and residual), the attention's
//! head split, softmax, LayerNorm with a cast, and the LEFF's depthwise 3x3 conv with QuickGELU.
//! Each is one candle custom op with a CPU reference (`cpu_fwd`, f32 arithmetic, rayon over
//! rows) and, in the CUDA build, one kernel of `cuda/fused.cu` that reads its inputs once and
//! writes its output once. Where candle's own ops take 3-20 passes over an activation (a cast
//! per product, bias, three for QuickGELU, eighteen for the depthwise taps), these take one.
//! Every op computes in f32 and stores in the dtype it is given, so f32 runs are unchanged and
//! fp16/bf16 keep PyTorch autocast's split: products in the reduced dtype, the residual stream,
//! LayerNorm and softmax arithmetic in f32.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result};
use candle_core::{Shape, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// The activation applied after a bias (same codes as the kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None = 0,
    /// `x * sigmoid(1.702 x)`.
    QuickGelu = 1,
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu = 2,
    Relu = 3,
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))` (torch's `approximate='tanh'`).
    GeluTanh = 4,
}

impl Act {
    fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::QuickGelu => x * (1.0 / (1.0 + (-1.702 * x).exp())),
            Act::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Act::Relu => x.max(0.0),
            Act::GeluTanh => gelu_tanh(x),
        }
    }
}

/// GELU's tanh approximation for the CPU reference, in f64 (as `erf`).
pub fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    (0.5 * x * (1.0 + u.tanh())) as f32
}

/// erf for GELU's CPU reference, computed in f64 so that the f32 result is the correctly
/// rounded value the GPU's `erff` is within an ulp of.
fn erf(x: f32) -> f32 {
    erf64(x as f64) as f32
}

fn erf64(x: f64) -> f64 {
    // The Maclaurin series below 2.5, the complementary function's continued fraction above;
    // both converge to f64 precision there.
    let a = x.abs();
    let r = if a < 2.5 {
        let (mut term, mut sum, x2) = (a, a, a * a);
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() <= 1e-17 * sum.abs() || n > 100.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * (a + f))
    };
    r.copysign(x)
}

fn contiguous<'a, T>(v: &'a [T], l: &Layout, op: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: input is not contiguous"),
    }
}

/// Elements per rayon task when converting between f32 and f16/bf16.
const CONVERT_CHUNK: usize = 1 << 15;

/// A CPU input as f32 (borrowed when it already is; converted in parallel, with the `half`
/// crate's slice conversions, otherwise).
fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<Cow<'a, [f32]>> {
    use half::slice::HalfFloatSliceExt;
    fn widen<T: Sync>(src: &[T], f: impl Fn(&[T], &mut [f32]) + Sync) -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(CONVERT_CHUNK)
            .zip(src.par_chunks(CONVERT_CHUNK))
            .for_each(|(o, i)| f(i, o));
        out
    }
    Ok(match s {
        CpuStorage::F32(v) => Cow::Borrowed(contiguous(v, l, op)?),
        CpuStorage::F16(v) => Cow::Owned(widen(contiguous(v, l, op)?, |i, o| {
            i.convert_to_f32_slice(o)
        })),
        CpuStorage::BF16(v) => Cow::Owned(widen(contiguous(v, l, op)?, |i, o| {
            i.convert_to_f32_slice(o)
        })),
        other => bail!("{op}: unsupported dtype {:?}", other.dtype()),
    })
}

/// f32 values stored in `dt` (round to nearest even, as the kernels' `__float2half_rn`).
fn store(v: Vec<f32>, dt: DType, op: &str) -> Result<CpuStorage> {
    use half::slice::HalfFloatSliceExt;
    fn narrow<T: Send + Copy>(v: &[f32], zero: T, f: impl Fn(&mut [T], &[f32]) + Sync) -> Vec<T> {
        let mut out = vec![zero; v.len()];
        out.par_chunks_mut(CONVERT_CHUNK)
            .zip(v.par_chunks(CONVERT_CHUNK))
            .for_each(|(o, i)| f(o, i));
        out
    }
    Ok(match dt {
        DType::F32 => CpuStorage::F32(v),
        DType::F16 => CpuStorage::F16(narrow(&v, half::f16::ZERO, |o, i| {
            o.convert_from_f32_slice(i)
        })),
        DType::BF16 => CpuStorage::BF16(narrow(&v, half::bf16::ZERO, |o, i| {
            o.convert_from_f32_slice(i)
        })),
        other => bail!("{op}: unsupported dtype {other:?}"),
    })
}

#[cfg(feature = "cuda")]
fn dtype_suffix(dt: DType, op: &str) -> Result<&'static str> {
    Ok(match dt {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => bail!("{op}: unsupported dtype {other:?}"),
    })
}

/// Fills `out[i] = g(i, bias of i)` in parallel, in pieces that share their bias pattern: rows
/// of `channels` elements when the bias runs along the last dim (`inner` 1), else planes of
/// `inner` elements of one channel (NCHW), so no element needs an index division.
fn biased(
    out: &mut [f32],
    bias: &[f32],
    channels: usize,
    inner: usize,
    g: impl Fn(usize, f32) -> f32 + Sync,
) {
    let run = if inner == 1 { channels } else { inner }.max(1);
    out.par_chunks_mut(run)
        .with_min_len(16)
        .enumerate()
        .for_each(|(p, o)| {
            let base = p * run;
            if inner == 1 {
                for (j, v) in o.iter_mut().enumerate() {
                    *v = g(base + j, bias[j]);
                }
            } else {
                let b = bias[p % channels];
                for (j, v) in o.iter_mut().enumerate() {
                    *v = g(base + j, b);
                }
            }
        });
}

/// `act(y + bias[c])`, `c = (i / inner) % channels`: the bias runs along the last dim
/// (`inner` 1) or along NCHW's channels (`inner` = H * W).
struct BiasAct {
    channels: usize,
    inner: usize,
    act: Act,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "pc-bias-act"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        yl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (ys, bs) = (f32s(y, yl, self.name())?, f32s(b, bl, self.name())?);
        let mut out = vec![0f32; ys.len()];
        biased(&mut out, &bs, self.channels, self.inner, |i, b| {
            self.act.apply(ys[i] + b)
        });
        Ok((store(out, y.dtype(), self.name())?, yl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        y: &candle_core::CudaStorage,
        yl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use gpu::Scalar::{I32, U64};
        let n = yl.shape().elem_count();
        let (yv, bv) = (gpu::view(y, yl)?, gpu::view(b, bl)?);
        let out = gpu::alloc(&y.device, yv.dtype(), n)?;
        let (c, inner) = (self.channels as u64, self.inner as u64);
        let scalars = [U64(n as u64), U64(c), U64(inner), I32(self.act as i32)];
        let name = format!("pc_bias_act_{}", yv.suffix());
        gpu::run(
            &y.device,
            &name,
            &[&yv, &bv],
            &out,
            &scalars,
            gpu::elementwise(n),
        )?;
        Ok((out.into_storage(&y.device), yl.shape().clone()))
    }
}

/// `act(res + (y + bias[c]))`, stored in the residual's dtype.
struct BiasAddAct {
    channels: usize,
    inner: usize,
    act: Act,
}

impl CustomOp3 for BiasAddAct {
    fn name(&self) -> &'static str {
        "pc-bias-add-act"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        yl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
        r: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (ys, bs, rs) = (f32s(y, yl, name)?, f32s(b, bl, name)?, f32s(r, rl, name)?);
        let mut out = vec![0f32; ys.len()];
        biased(&mut out, &bs, self.channels, self.inner, |i, b| {
            self.act.apply(rs[i] + (ys[i] + b))
        });
        Ok((store(out, r.dtype(), name)?, yl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        y: &candle_core::CudaStorage,
        yl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
        r: &candle_core::CudaStorage,
        rl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use gpu::Scalar::{I32, U64};
        let n = yl.shape().elem_count();
        let (yv, bv, rv) = (gpu::view(y, yl)?, gpu::view(b, bl)?, gpu::view(r, rl)?);
        let out = gpu::alloc(&y.device, rv.dtype(), n)?;
        let (c, inner) = (self.channels as u64, self.inner as u64);
        let scalars = [U64(n as u64), U64(c), U64(inner), I32(self.act as i32)];
        let name = format!("pc_bias_add_act_{}_{}", yv.suffix(), rv.suffix());
        let cfg = gpu::elementwise(n);
        gpu::run(&y.device, &name, &[&yv, &bv, &rv], &out, &scalars, cfg)?;
        Ok((out.into_storage(&y.device), yl.shape().clone()))
    }
}

/// `[N, L, 3 D]` projections plus bias -> `[3, N, H, L, D / H]`, the queries times `scale`.
struct QkvSplit {
    heads: usize,
    scale: f32,
}

impl QkvSplit {
    fn dims(&self, l: &Layout) -> Result<(usize, usize, usize, usize)> {
        let (n, len, d3) = l.shape().dims3()?;
        if d3 % 3 != 0 || (d3 / 3) % self.heads != 0 {
            bail!("pc-qkv-split: width {d3} is not 3 x heads x head dim");
        }
        Ok((n, len, self.heads, d3 / 3 / self.heads))
    }
}

impl CustomOp2 for QkvSplit {
    fn name(&self) -> &'static str {
        "pc-qkv-split"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, l, h, hd) = self.dims(xl)?;
        let (xs, bs) = (f32s(x, xl, self.name())?, f32s(b, bl, self.name())?);
        let d = h * hd;
        let mut out = vec![0f32; 3 * n * l * d];
        // One [L, hd] matrix per (s, n, h).
        out.par_chunks_mut(l * hd).enumerate().for_each(|(m, o)| {
            let (s, ni, hi) = (m / (n * h), (m / h) % n, m % h);
            let sc = if s == 0 { self.scale } else { 1.0 };
            for li in 0..l {
                for e in 0..hd {
                    let col = s * d + hi * hd + e;
                    o[li * hd + e] = (xs[(ni * l + li) * 3 * d + col] + bs[col]) * sc;
                }
            }
        });
        let shape = Shape::from((3, n, h, l, hd));
        Ok((store(out, x.dtype(), self.name())?, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, l, h, hd) = self.dims(xl)?;
        let total = 3 * n * l * h * hd;
        let (xv, bv) = (gpu::view(x, xl)?, gpu::view(b, bl)?);
        let out = gpu::alloc(&x.device, xv.dtype(), total)?;
        use gpu::Scalar::{F32, U64};
        let dims = [U64(n as u64), U64(l as u64), U64(h as u64), U64(hd as u64)];
        let scalars = [dims[0], dims[1], dims[2], dims[3], F32(self.scale)];
        let name = format!("pc_qkv_split_{}", xv.suffix());
        let cfg = gpu::elementwise(total);
        gpu::run(&x.device, &name, &[&xv, &bv], &out, &scalars, cfg)?;
        Ok((out.into_storage(&x.device), Shape::from((3, n, h, l, hd))))
    }
}

/// The LEFF's depthwise 3x3 conv (zero padding 1) over `[N, g, g, C]`, plus bias, then QuickGELU.
struct DepthwiseGelu;

impl DepthwiseGelu {
    fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
        let (n, g, g2, c) = l.shape().dims4()?;
        if g != g2 {
            bail!("pc-depthwise-gelu: grid {g} x {g2} is not square");
        }
        Ok((n, g, c))
    }
}

impl CustomOp3 for DepthwiseGelu {
    fn name(&self) -> &'static str {
        "pc-depthwise-gelu"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        t: &CpuStorage,
        tl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (n, g, c) = Self::dims(xl)?;
        let (xs, taps, bs) = (f32s(x, xl, name)?, f32s(t, tl, name)?, f32s(b, bl, name)?);
        let mut out = vec![0f32; n * g * g * c];
        // One output row of the grid per task.
        out.par_chunks_mut(g * c).enumerate().for_each(|(r, o)| {
            let (ni, i) = (r / g, r % g);
            for j in 0..g {
                for ch in 0..c {
                    let mut acc = bs[ch];
                    for di in 0..3 {
                        let Some(ii) = (i + di).checked_sub(1).filter(|&v| v < g) else {
                            continue;
                        };
                        for dj in 0..3 {
                            let Some(jj) = (j + dj).checked_sub(1).filter(|&v| v < g) else {
                                continue;
                            };
                            acc += taps[(di * 3 + dj) * c + ch]
                                * xs[((ni * g + ii) * g + jj) * c + ch];
                        }
                    }
                    o[j * c + ch] = Act::QuickGelu.apply(acc);
                }
            }
        });
        Ok((store(out, x.dtype(), name)?, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        t: &candle_core::CudaStorage,
        tl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, g, c) = Self::dims(xl)?;
        let total = n * g * g * c;
        let (xv, tv, bv) = (gpu::view(x, xl)?, gpu::view(t, tl)?, gpu::view(b, bl)?);
        let out = gpu::alloc(&x.device, xv.dtype(), total)?;
        use gpu::Scalar::U64;
        let scalars = [U64(n as u64), U64(g as u64), U64(c as u64)];
        let name = format!("pc_depthwise_gelu_{}", xv.suffix());
        let cfg = gpu::elementwise(total);
        gpu::run(&x.device, &name, &[&xv, &tv, &bv], &out, &scalars, cfg)?;
        Ok((out.into_storage(&x.device), xl.shape().clone()))
    }
}

/// Softmax over the last dim in f32 arithmetic, stored in the input's dtype; `causal` zeroes
/// column j > i in row i of each square `[.., L, L]` matrix.
struct Softmax {
    causal: bool,
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "pc-softmax"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = l.shape().dims().last().copied().unwrap_or(1);
        let xs = f32s(x, l, self.name())?;
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(cols).enumerate().for_each(|(r, o)| {
            let row = &xs[r * cols..(r + 1) * cols];
            let last = if self.causal { r % cols } else { cols - 1 };
            let m = row[..=last]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let s: f32 = row[..=last].iter().map(|&v| (v - m).exp()).sum();
            let inv = 1.0 / s;
            for (j, v) in o.iter_mut().enumerate() {
                *v = if j <= last {
                    (row[j] - m).exp() * inv
                } else {
                    0.0
                };
            }
        });
        Ok((store(out, x.dtype(), self.name())?, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let n = l.shape().elem_count();
        let cols = l.shape().dims().last().copied().unwrap_or(1);
        let xv = gpu::view(x, l)?;
        let out = gpu::alloc(&x.device, xv.dtype(), n)?;
        use gpu::Scalar::{I32, U64};
        let scalars = [
            U64((n / cols) as u64),
            I32(cols as i32),
            I32(self.causal as i32),
        ];
        let name = format!("pc_softmax_{}", xv.suffix());
        gpu::run(
            &x.device,
            &name,
            &[&xv],
            &out,
            &scalars,
            gpu::rows(n / cols),
        )?;
        Ok((out.into_storage(&x.device), l.shape().clone()))
    }
}

/// LayerNorm of f32 rows (mean, then the centred variance), stored in `out`.
struct LayerNormTo {
    eps: f32,
    out: DType,
}

impl CustomOp3 for LayerNormTo {
    fn name(&self) -> &'static str {
        "pc-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let cols = xl.shape().dims().last().copied().unwrap_or(1);
        let (xs, ws, bs) = (f32s(x, xl, name)?, f32s(w, wl, name)?, f32s(b, bl, name)?);
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(cols).enumerate().for_each(|(r, o)| {
            let row = &xs[r * cols..(r + 1) * cols];
            let mean = row.iter().sum::<f32>() / cols as f32;
            let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for (j, v) in o.iter_mut().enumerate() {
                *v = (row[j] - mean) * inv * ws[j] + bs[j];
            }
        });
        Ok((store(out, self.out, name)?, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let n = xl.shape().elem_count();
        let cols = xl.shape().dims().last().copied().unwrap_or(1);
        let (xv, wv, bv) = (gpu::view(x, xl)?, gpu::view(w, wl)?, gpu::view(b, bl)?);
        let out = gpu::alloc(&x.device, self.out, n)?;
        let suffix = dtype_suffix(self.out, self.name())?;
        use gpu::Scalar::{F32, I32, U64};
        let scalars = [U64((n / cols) as u64), I32(cols as i32), F32(self.eps)];
        let name = format!("pc_layer_norm_{suffix}");
        let cfg = gpu::rows(n / cols);
        gpu::run(&x.device, &name, &[&xv, &wv, &bv], &out, &scalars, cfg)?;
        Ok((out.into_storage(&x.device), xl.shape().clone()))
    }
}

fn f32_vec(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)?.contiguous()
}

/// How the fused ops run on a device: as their own code (the CPU references; on a GPU, the
/// kernels once they have matched those references there) or composed of candle's own ops
/// (the same arithmetic in more passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Fused,
    Composed,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Fused => "fused",
            Path::Composed => "composed",
        }
    }
}

/// The path for `dev`. On a GPU the kernels are checked against their CPU references once per
/// device, at first use (`self_check`, a few milliseconds); should one disagree or fail to
/// launch, the ops run composed of candle's ops on that device and a warning says why, so a
/// kernel fault can cost speed but never a wrong number.
pub fn path(dev: &candle_core::Device) -> Path {
    match dev {
        candle_core::Device::Cpu => Path::Fused,
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(d) => gpu_path(dev, d.id()),
        #[allow(unreachable_patterns)]
        _ => Path::Composed,
    }
}

#[cfg(feature = "cuda")]
fn gpu_path(dev: &candle_core::Device, id: candle_core::cuda_backend::DeviceId) -> Path {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CHECKED: OnceLock<Mutex<HashMap<candle_core::cuda_backend::DeviceId, Path>>> =
        OnceLock::new();
    let map = CHECKED.get_or_init(Default::default);
    if let Some(p) = map.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return *p;
    }
    // The check launches the kernels directly (not through `path`), so no lock is held.
    let p = match self_check(dev, 0x5eed) {
        Ok(checks) if checks.iter().all(Check::ok) => Path::Fused,
        Ok(checks) => {
            let bad: Vec<String> = checks
                .iter()
                .filter(|c| !c.ok())
                .map(|c| format!("{} ({:.1e})", c.op, c.rel_diff))
                .collect();
            eprintln!(
                "warning: fused GPU kernels differ from their CPU references: {}; running those ops as candle ops instead (slower, same numbers)",
                bad.join(", ")
            );
            Path::Composed
        }
        Err(e) => {
            eprintln!("warning: fused GPU kernels did not run ({e}); running those ops as candle ops instead (slower, same numbers)");
            Path::Composed
        }
    };
    map.lock().unwrap_or_else(|e| e.into_inner()).insert(id, p);
    p
}

fn fused_on(t: &Tensor) -> bool {
    path(t.device()) == Path::Fused
}

/// `act(y + bias)` with the bias along the last dim, in `y`'s dtype.
pub fn bias_act(y: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    if fused_on(y) {
        k_bias_act(y, bias, act, false)
    } else {
        c_bias_act(y, bias, act, false)
    }
}

/// `act(y + bias)` over NCHW with a per-channel bias, in `y`'s dtype.
pub fn bias_act_nchw(y: &Tensor, bias: &Tensor, act: Act) -> Result<Tensor> {
    if fused_on(y) {
        k_bias_act(y, bias, act, true)
    } else {
        c_bias_act(y, bias, act, true)
    }
}

/// `act(res + (y + bias))` with the bias along the last dim, in `res`'s dtype.
pub fn bias_add_act(y: &Tensor, bias: &Tensor, res: &Tensor, act: Act) -> Result<Tensor> {
    if fused_on(y) {
        k_bias_add_act(y, bias, res, act, false)
    } else {
        c_bias_add_act(y, bias, res, act, false)
    }
}

/// `act(res + (y + bias))` over NCHW with a per-channel bias, in `res`'s dtype.
pub fn bias_add_act_nchw(y: &Tensor, bias: &Tensor, res: &Tensor, act: Act) -> Result<Tensor> {
    if fused_on(y) {
        k_bias_add_act(y, bias, res, act, true)
    } else {
        c_bias_add_act(y, bias, res, act, true)
    }
}

/// `[N, L, 3 D]` in-projections plus bias -> `(q * scale, k, v)`, each `[N, H, L, D / H]`.
pub fn qkv_split(
    qkv: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    if fused_on(qkv) {
        k_qkv_split(qkv, bias, heads, scale)
    } else {
        c_qkv_split(qkv, bias, heads, scale)
    }
}

/// The LEFF's depthwise conv: `x` `[N, g, g, C]`, `taps` `[9, C]`, `bias` `[C]`, then QuickGELU.
pub fn depthwise_gelu(x: &Tensor, taps: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if fused_on(x) {
        k_depthwise_gelu(x, taps, bias)
    } else {
        c_depthwise_gelu(x, taps, bias)
    }
}

/// Softmax over the last dim (f32 arithmetic) in `x`'s dtype; `causal` for `[.., L, L]` scores.
pub fn softmax(x: &Tensor, causal: bool) -> Result<Tensor> {
    if causal {
        let d = x.dims();
        if d.len() < 2 || d[d.len() - 1] != d[d.len() - 2] {
            bail!("pc-softmax: causal scores must be square, got {:?}", d);
        }
    }
    if fused_on(x) {
        k_softmax(x, causal)
    } else {
        c_softmax(x, causal)
    }
}

/// LayerNorm over the last dim of an f32 tensor (any other dtype is widened first), stored in
/// `out`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64, out: DType) -> Result<Tensor> {
    if fused_on(x) {
        k_layer_norm(x, w, b, eps, out)
    } else {
        c_layer_norm(x, w, b, eps, out)
    }
}

// The fused ops as custom ops (CPU reference or GPU kernel).

fn k_bias_act(y: &Tensor, bias: &Tensor, act: Act, nchw: bool) -> Result<Tensor> {
    let (channels, inner) = channels_inner(y, nchw)?;
    let op = BiasAct {
        channels,
        inner,
        act,
    };
    y.contiguous()?.apply_op2_no_bwd(&f32_vec(bias)?, &op)
}

fn k_bias_add_act(y: &Tensor, bias: &Tensor, res: &Tensor, act: Act, nchw: bool) -> Result<Tensor> {
    let (channels, inner) = channels_inner(y, nchw)?;
    let op = BiasAddAct {
        channels,
        inner,
        act,
    };
    y.contiguous()?
        .apply_op3_no_bwd(&f32_vec(bias)?, &res.contiguous()?, &op)
}

fn k_qkv_split(
    qkv: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let all = qkv
        .contiguous()?
        .apply_op2_no_bwd(&f32_vec(bias)?, &QkvSplit { heads, scale })?;
    Ok((all.get(0)?, all.get(1)?, all.get(2)?))
}

fn k_depthwise_gelu(x: &Tensor, taps: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(&f32_vec(taps)?, &f32_vec(bias)?, &DepthwiseGelu)
}

fn k_softmax(x: &Tensor, causal: bool) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Softmax { causal })
}

fn k_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64, out: DType) -> Result<Tensor> {
    let op = LayerNormTo {
        eps: eps as f32,
        out,
    };
    f32_vec(x)?.apply_op3_no_bwd(&f32_vec(w)?, &f32_vec(b)?, &op)
}

/// `(channels, inner)`: the bias index of element i is `(i / inner) % channels`.
fn channels_inner(y: &Tensor, nchw: bool) -> Result<(usize, usize)> {
    if nchw {
        let (_, c, h, w) = y.dims4()?;
        Ok((c, h * w))
    } else {
        Ok((y.dim(candle_core::D::Minus1)?, 1))
    }
}

// The same ops composed of candle's ops, in f32, stored in the same dtypes.

fn c_act(v: &Tensor, act: Act) -> Result<Tensor> {
    match act {
        Act::None => Ok(v.clone()),
        Act::QuickGelu => v * candle_nn::ops::sigmoid(&(v * 1.702)?)?,
        Act::Gelu => v.gelu_erf(),
        Act::Relu => v.relu(),
        // candle's `gelu` is the tanh approximation.
        Act::GeluTanh => v.gelu(),
    }
}

fn c_bias(y: &Tensor, bias: &Tensor, nchw: bool) -> Result<Tensor> {
    let b = bias.to_dtype(DType::F32)?;
    let b = if nchw {
        let c = b.dim(0)?;
        b.reshape((1, c, 1, 1))?
    } else {
        b
    };
    y.to_dtype(DType::F32)?.broadcast_add(&b)
}

fn c_bias_act(y: &Tensor, bias: &Tensor, act: Act, nchw: bool) -> Result<Tensor> {
    c_act(&c_bias(y, bias, nchw)?, act)?.to_dtype(y.dtype())
}

fn c_bias_add_act(y: &Tensor, bias: &Tensor, res: &Tensor, act: Act, nchw: bool) -> Result<Tensor> {
    let v = (res.to_dtype(DType::F32)? + c_bias(y, bias, nchw)?)?;
    c_act(&v, act)?.to_dtype(res.dtype())
}

fn c_qkv_split(
    qkv: &Tensor,
    bias: &Tensor,
    heads: usize,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, l, d3) = qkv.dims3()?;
    let hd = d3 / 3 / heads;
    let all = c_bias(qkv, bias, false)?
        .reshape((n, l, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?;
    let dt = qkv.dtype();
    let q = (all.get(0)? * scale as f64)?.to_dtype(dt)?.contiguous()?;
    let k = all.get(1)?.to_dtype(dt)?.contiguous()?;
    let v = all.get(2)?.to_dtype(dt)?.contiguous()?;
    Ok((q, k, v))
}

fn c_depthwise_gelu(x: &Tensor, taps: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (_, g, _, _) = x.dims4()?;
    let xf = x.to_dtype(DType::F32)?;
    let taps = taps.to_dtype(DType::F32)?;
    let p = xf.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
    let mut acc = bias
        .to_dtype(DType::F32)?
        .broadcast_as(xf.shape())?
        .contiguous()?;
    for di in 0..3 {
        let rows = p.narrow(1, di, g)?;
        for dj in 0..3 {
            let win = rows.narrow(2, dj, g)?;
            acc = (acc + win.broadcast_mul(&taps.get(di * 3 + dj)?)?)?;
        }
    }
    c_act(&acc, Act::QuickGelu)?.to_dtype(x.dtype())
}

fn c_softmax(x: &Tensor, causal: bool) -> Result<Tensor> {
    let mut v = x.to_dtype(DType::F32)?;
    if causal {
        let l = v.dim(candle_core::D::Minus1)?;
        let mask: Vec<f32> = (0..l)
            .flat_map(|i| (0..l).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        v = v.broadcast_add(&Tensor::from_vec(mask, (l, l), v.device())?)?;
    }
    candle_nn::ops::softmax_last_dim(&v.contiguous()?)?.to_dtype(x.dtype())
}

fn c_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64, out: DType) -> Result<Tensor> {
    candle_nn::ops::layer_norm(&f32_vec(x)?, &f32_vec(w)?, &f32_vec(b)?, eps as f32)?.to_dtype(out)
}

/// One op in one dtype of [`self_check`]: its largest difference from the CPU reference,
/// relative to the reference's largest magnitude, and the bound it must stay under.
#[derive(Debug, Clone)]
pub struct Check {
    pub op: String,
    pub rel_diff: f32,
    pub bound: f32,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.rel_diff.is_finite() && self.rel_diff <= self.bound
    }
}

type OpFn = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// One op under test: its inputs (the first one in the storage dtype under test; biases,
/// taps and LayerNorm weights f32) and the op as a fused kernel and as composed candle ops.
struct Case {
    name: &'static str,
    inputs: Vec<Tensor>,
    kernel: OpFn,
    /// What the kernel is tested against on the CPU (unit tests).
    #[cfg_attr(not(test), allow(dead_code))]
    composed: OpFn,
}

/// Random inputs for every op, at sizes that leave partial blocks and warps.
fn cases(seed: u64) -> Result<Vec<Case>> {
    use candle_core::Device;
    let mut state = seed | 1;
    let mut rand = |shape: &[usize]| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    };
    let (n, l, h, hd, g, c) = (3, 50, 4, 16, 7, 96);
    let stack = |(q, k, v): (Tensor, Tensor, Tensor)| Tensor::stack(&[q, k, v], 0);
    let ln_out = |t: &[Tensor]| t[0].dtype();
    Ok(vec![
        Case {
            name: "bias_act quick_gelu",
            inputs: vec![rand(&[n, l, c])?, rand(&[c])?],
            kernel: Box::new(|t| k_bias_act(&t[0], &t[1], Act::QuickGelu, false)),
            composed: Box::new(|t| c_bias_act(&t[0], &t[1], Act::QuickGelu, false)),
        },
        Case {
            name: "bias_act gelu",
            inputs: vec![rand(&[n, l, c])?, rand(&[c])?],
            kernel: Box::new(|t| k_bias_act(&t[0], &t[1], Act::Gelu, false)),
            composed: Box::new(|t| c_bias_act(&t[0], &t[1], Act::Gelu, false)),
        },
        Case {
            name: "bias_act gelu_tanh",
            inputs: vec![rand(&[n, l, c])?, rand(&[c])?],
            kernel: Box::new(|t| k_bias_act(&t[0], &t[1], Act::GeluTanh, false)),
            composed: Box::new(|t| c_bias_act(&t[0], &t[1], Act::GeluTanh, false)),
        },
        Case {
            name: "bias_act_nchw relu",
            inputs: vec![rand(&[n, c, g, g])?, rand(&[c])?],
            kernel: Box::new(|t| k_bias_act(&t[0], &t[1], Act::Relu, true)),
            composed: Box::new(|t| c_bias_act(&t[0], &t[1], Act::Relu, true)),
        },
        Case {
            name: "bias_add_act (f32 residual)",
            inputs: vec![rand(&[n, l, c])?, rand(&[c])?, rand(&[n, l, c])?],
            kernel: Box::new(|t| k_bias_add_act(&t[0], &t[1], &t[2], Act::None, false)),
            composed: Box::new(|t| c_bias_add_act(&t[0], &t[1], &t[2], Act::None, false)),
        },
        Case {
            name: "bias_add_act_nchw relu",
            inputs: vec![rand(&[n, c, g, g])?, rand(&[c])?, rand(&[n, c, g, g])?],
            kernel: Box::new(|t| {
                k_bias_add_act(&t[0], &t[1], &t[2].to_dtype(t[0].dtype())?, Act::Relu, true)
            }),
            composed: Box::new(|t| {
                c_bias_add_act(&t[0], &t[1], &t[2].to_dtype(t[0].dtype())?, Act::Relu, true)
            }),
        },
        Case {
            name: "qkv_split",
            inputs: vec![rand(&[n, l, 3 * h * hd])?, rand(&[3 * h * hd])?],
            kernel: Box::new(move |t| stack(k_qkv_split(&t[0], &t[1], h, 0.25)?)),
            composed: Box::new(move |t| stack(c_qkv_split(&t[0], &t[1], h, 0.25)?)),
        },
        Case {
            name: "depthwise_gelu",
            inputs: vec![rand(&[n, g, g, c])?, rand(&[9, c])?, rand(&[c])?],
            kernel: Box::new(|t| k_depthwise_gelu(&t[0], &t[1], &t[2])),
            composed: Box::new(|t| c_depthwise_gelu(&t[0], &t[1], &t[2])),
        },
        Case {
            name: "softmax",
            inputs: vec![rand(&[n, h, l, 77])?],
            kernel: Box::new(|t| k_softmax(&t[0], false)),
            composed: Box::new(|t| c_softmax(&t[0], false)),
        },
        Case {
            name: "softmax causal",
            inputs: vec![rand(&[n, h, 77, 77])?],
            kernel: Box::new(|t| k_softmax(&t[0], true)),
            composed: Box::new(|t| c_softmax(&t[0], true)),
        },
        Case {
            // The input is widened to f32 (the residual stream); the output takes its dtype.
            name: "layer_norm",
            inputs: vec![rand(&[n, l, 3 * c])?, rand(&[3 * c])?, rand(&[3 * c])?],
            kernel: Box::new(move |t| k_layer_norm(&t[0], &t[1], &t[2], 1e-5, ln_out(t))),
            composed: Box::new(move |t| c_layer_norm(&t[0], &t[1], &t[2], 1e-5, ln_out(t))),
        },
    ])
}

/// One rounding of the output dtype, plus f32 noise.
fn bound(dt: DType) -> f32 {
    match dt {
        DType::F32 => 1e-5,
        DType::F16 => 1.5e-3,
        _ => 1e-2,
    }
}

fn rel_diff(got: &Tensor, want: &Tensor) -> Result<f32> {
    let want = want
        .to_dtype(DType::F32)?
        .to_device(&candle_core::Device::Cpu)?;
    let got = got
        .to_dtype(DType::F32)?
        .to_device(&candle_core::Device::Cpu)?;
    let scale = want
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?
        .max(1e-30);
    let diff = (got - &want)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    Ok(diff / scale)
}

/// Runs every fused op's kernel on `device` and its CPU reference on the CPU over the same
/// random inputs, in f32, f16 and bf16, and compares them (`pyramidclip dev kernel-check`; on
/// a GPU also once at first use, see `path`).
pub fn self_check(device: &candle_core::Device, seed: u64) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for case in cases(seed)? {
            let on = |dev: &candle_core::Device| -> Result<Tensor> {
                let mut ts = Vec::new();
                for (i, t) in case.inputs.iter().enumerate() {
                    let t = if i == 0 { t.to_dtype(dt)? } else { t.clone() };
                    ts.push(t.to_device(dev)?);
                }
                (case.kernel)(&ts)
            };
            let want = on(&candle_core::Device::Cpu)?;
            let got = on(device)?;
            out.push(Check {
                op: format!("{} {dt:?}", case.name),
                rel_diff: rel_diff(&got, &want)?,
                bound: bound(dt),
            });
        }
    }
    Ok(out)
}

/// The CUDA side: the PTX of `cuda/fused.cu` (compiled by build.rs) and typed launch helpers.
#[cfg(feature = "cuda")]
mod gpu {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, LaunchArgs, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDevice, CudaStorage, CudaStorageSlice, WrapErr};
    use candle_core::{bail, DType, Layout, Result};
    use half::{bf16, f16};

    pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
    pub const MODULE: &str = "pyramidclip_fused";

    pub enum View<'a> {
        F32(CudaView<'a, f32>),
        F16(CudaView<'a, f16>),
        BF16(CudaView<'a, bf16>),
    }

    pub fn view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<View<'a>> {
        let Some((a, b)) = l.contiguous_offsets() else {
            bail!("fused kernel: input is not contiguous")
        };
        Ok(match &s.slice {
            CudaStorageSlice::F32(x) => View::F32(x.slice(a..b)),
            CudaStorageSlice::F16(x) => View::F16(x.slice(a..b)),
            CudaStorageSlice::BF16(x) => View::BF16(x.slice(a..b)),
            _ => bail!("fused kernel: unsupported dtype"),
        })
    }

    impl View<'_> {
        pub fn dtype(&self) -> DType {
            match self {
                View::F32(_) => DType::F32,
                View::F16(_) => DType::F16,
                View::BF16(_) => DType::BF16,
            }
        }

        pub fn suffix(&self) -> &'static str {
            match self {
                View::F32(_) => "f32",
                View::F16(_) => "f16",
                View::BF16(_) => "bf16",
            }
        }

        pub fn push<'b>(&'b self, args: &mut LaunchArgs<'b>) {
            match self {
                View::F32(x) => args.arg(x),
                View::F16(x) => args.arg(x),
                View::BF16(x) => args.arg(x),
            };
        }
    }

    pub enum Out {
        F32(CudaSlice<f32>),
        F16(CudaSlice<f16>),
        BF16(CudaSlice<bf16>),
    }

    pub fn alloc(dev: &CudaDevice, dt: DType, n: usize) -> Result<Out> {
        // SAFETY: every element is written by the kernel that follows.
        Ok(unsafe {
            match dt {
                DType::F32 => Out::F32(dev.alloc::<f32>(n)?),
                DType::F16 => Out::F16(dev.alloc::<f16>(n)?),
                DType::BF16 => Out::BF16(dev.alloc::<bf16>(n)?),
                other => bail!("fused kernel: unsupported dtype {other:?}"),
            }
        })
    }

    impl Out {
        pub fn push<'b>(&'b self, args: &mut LaunchArgs<'b>) {
            match self {
                Out::F32(x) => args.arg(x),
                Out::F16(x) => args.arg(x),
                Out::BF16(x) => args.arg(x),
            };
        }

        pub fn into_storage(self, dev: &CudaDevice) -> CudaStorage {
            match self {
                Out::F32(x) => CudaStorage::wrap_cuda_slice(x, dev.clone()),
                Out::F16(x) => CudaStorage::wrap_cuda_slice(x, dev.clone()),
                Out::BF16(x) => CudaStorage::wrap_cuda_slice(x, dev.clone()),
            }
        }
    }

    /// A kernel's scalar argument (after its tensors), as the kernel declares it.
    #[derive(Debug, Clone, Copy)]
    pub enum Scalar {
        U64(u64),
        I32(i32),
        F32(f32),
    }

    /// Launches `name` of `cuda/fused.cu`: the inputs in order, the output, then the scalars
    /// (every kernel there takes its arguments in that order).
    pub fn run(
        dev: &CudaDevice,
        name: &str,
        inputs: &[&View<'_>],
        out: &Out,
        scalars: &[Scalar],
        cfg: LaunchConfig,
    ) -> Result<()> {
        let f = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let mut args = f.builder();
        for v in inputs {
            v.push(&mut args);
        }
        out.push(&mut args);
        for s in scalars {
            match s {
                Scalar::U64(v) => args.arg(v),
                Scalar::I32(v) => args.arg(v),
                Scalar::F32(v) => args.arg(v),
            };
        }
        // SAFETY: the argument lists match the kernels' signatures in cuda/fused.cu.
        unsafe { args.launch(cfg) }.w()?;
        Ok(())
    }

    /// Grid-stride element-wise launch: 256 threads a block.
    pub fn elementwise(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(256).clamp(1, 1 << 20) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One warp a row, four rows a block.
    pub fn rows(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows.div_ceil(4).max(1) as u32, 1, 1),
            block_dim: (32, 4, 1),
            shared_mem_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        rel_diff(a, b).unwrap()
    }

    #[test]
    fn fused_ops_match_the_same_ops_composed_of_candle_ops() {
        for dt in [DType::F32, DType::F16, DType::BF16] {
            for case in cases(7).unwrap() {
                let ts: Vec<Tensor> = case
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        if i == 0 {
                            t.to_dtype(dt).unwrap()
                        } else {
                            t.clone()
                        }
                    })
                    .collect();
                let k = (case.kernel)(&ts).unwrap();
                let c = (case.composed)(&ts).unwrap();
                assert_eq!(k.dtype(), c.dtype(), "{} {dt:?}", case.name);
                assert_eq!(k.dims(), c.dims(), "{} {dt:?}", case.name);
                let d = rel_diff(&k, &c).unwrap();
                assert!(d <= bound(dt), "{} {dt:?}: {d}", case.name);
            }
        }
        // The CPU's own check passes too (on a GPU this compares its kernels).
        assert!(self_check(&Device::Cpu, 3).unwrap().iter().all(Check::ok));
    }

    #[test]
    fn outputs_take_the_dtypes_the_layers_rely_on() {
        let y = rand(&[2, 5, 8], 1).to_dtype(DType::F16).unwrap();
        let b = rand(&[8], 2);
        let r = rand(&[2, 5, 8], 3);
        // The residual stream stays f32; activations keep the product's dtype.
        assert_eq!(
            bias_add_act(&y, &b, &r, Act::None).unwrap().dtype(),
            DType::F32
        );
        assert_eq!(
            bias_act(&y, &b, Act::QuickGelu).unwrap().dtype(),
            DType::F16
        );
        let ln = layer_norm(&r, &b, &b, 1e-5, DType::BF16).unwrap();
        assert_eq!(ln.dtype(), DType::BF16);
        let (q, k, v) = qkv_split(&rand(&[2, 5, 12], 4), &rand(&[12], 5), 2, 0.5).unwrap();
        for t in [q, k, v] {
            assert_eq!(t.dims(), &[2, 2, 5, 2]);
            assert!(t.is_contiguous());
        }
        assert!(
            softmax(&rand(&[2, 3, 4], 6), true).is_err(),
            "causal scores must be square"
        );
        assert_eq!(path(&Device::Cpu), Path::Fused);
    }

    #[test]
    fn depthwise_gelu_matches_a_padded_conv() {
        let (n, g, c) = (2, 4, 5);
        let x = rand(&[n, g, g, c], 13);
        let taps = rand(&[9, c], 14);
        let bias = rand(&[c], 15);
        // The same conv as candle's grouped conv2d over NCHW.
        let w = taps.t().unwrap().reshape((c, 1, 3, 3)).unwrap();
        let nchw = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        let conv = nchw
            .conv2d(&w, 1, 1, 1, c)
            .unwrap()
            .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        let want = (&conv * candle_nn::ops::sigmoid(&(&conv * 1.702).unwrap()).unwrap())
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        assert!(max_diff(&depthwise_gelu(&x, &taps, &bias).unwrap(), &want) < 1e-5);
    }

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0f64, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.0, -0.842_700_792_949_714_9),
        ] {
            assert!((erf64(x) - want).abs() < 1e-12, "erf({x})");
        }
    }
}
