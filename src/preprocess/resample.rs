//! PIL's resampling, computed the way `Image.resize` does it: BICUBIC (a = -0.5) or BILINEAR (a
//! triangle) as a separable convolution whose support grows with the reduction, coefficients in 22-bit fixed point,
//! horizontal pass then vertical pass, each rounded and clipped to 8 bits; NEAREST for palette
//! and bilevel images. Only the output rectangle that is kept (the centre crop) is computed:
//! every output pixel depends on the input alone, so the values equal PIL's full resize.

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The interpolation of a resize (torchvision's `InterpolationMode` on PIL images, open_clip's
/// `interpolation`): PIL's BICUBIC (support 2) or BILINEAR (support 1). Palette and bilevel
/// images are resized NEAREST either way, as PIL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Interpolation {
    #[default]
    Bicubic,
    Bilinear,
}

impl Interpolation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bicubic => "bicubic",
            Self::Bilinear => "bilinear",
        }
    }

    /// open_clip's name for it.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bicubic" => Some(Self::Bicubic),
            "bilinear" => Some(Self::Bilinear),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bicubic => 2.0,
            Self::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Bicubic => bicubic(x),
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
        }
    }
}

fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Filter taps for each output position: (first input index, taps).
pub struct Coeffs {
    pub bounds: Vec<(usize, usize)>,
    pub ksize: usize,
    pub fixed: Vec<i32>,
    pub float: Vec<f64>,
}

pub fn coeffs(in_size: usize, out_size: usize, filter: Interpolation) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut float = vec![0f64; out_size * ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let k = &mut float[xx * ksize..xx * ksize + ksize];
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        if ww != 0.0 {
            for v in k.iter_mut().take(n) {
                *v /= ww;
            }
        }
        bounds.push((xmin, n));
    }
    let fixed = float
        .iter()
        .map(|&v| {
            let s = v * (1u32 << PRECISION_BITS) as f64;
            if v < 0.0 {
                (-0.5 + s) as i32
            } else {
                (0.5 + s) as i32
            }
        })
        .collect();
    Coeffs {
        bounds,
        ksize,
        fixed,
        float,
    }
}

/// Pillow's clip of a fixed-point sum to 8 bits (>= 2^30 -> 255, <= 0 -> 0, else v >> 22),
/// written branch-free so the row loops vectorise.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

crate::native::simd::simd_fn! {
    /// `acc[i] += row[i] * k` (wrapping, as Pillow's int arithmetic).
    fn mul_add_row(acc: &mut [i32], row: &[u8], k: i32) {
        for (a, &p) in acc.iter_mut().zip(row) {
            *a = a.wrapping_add(p as i32 * k);
        }
    }
}

crate::native::simd::simd_fn! {
    fn clip_row(dst: &mut [u8], acc: &[i32]) {
        for (d, &a) in dst.iter_mut().zip(acc) {
            *d = clip8(a);
        }
    }
}

/// An interleaved 8-bit image.
#[derive(Debug, Clone)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// Pillow resizes vertically first when the height shrinks much more than the width
/// (measured on Pillow 13: `in_h - out_h > 2 * (in_w - out_w)` with a vertical reduction).
pub fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    out_h < in_h && (in_h as i64 - out_h as i64) > 2 * (in_w as i64 - out_w as i64)
}

/// Horizontal pass: output columns `cols` of every row of `src`; `shift` is subtracted from
/// the coefficient bounds (the first source column `src` holds).
fn pass_h(src: &Plane, co: &Coeffs, cols: std::ops::Range<usize>, shift: usize) -> Plane {
    match src.channels {
        1 => pass_h_c::<1>(src, co, cols, shift),
        2 => pass_h_c::<2>(src, co, cols, shift),
        3 => pass_h_c::<3>(src, co, cols, shift),
        _ => pass_h_c::<4>(src, co, cols, shift),
    }
}

/// `pass_h` for a fixed channel count, so the per-tap loop over channels unrolls.
fn pass_h_c<const C: usize>(
    src: &Plane,
    co: &Coeffs,
    cols: std::ops::Range<usize>,
    shift: usize,
) -> Plane {
    let ow = cols.len();
    let mut out = vec![0u8; src.height * ow * C];
    #[cfg(target_arch = "x86_64")]
    let done = std::is_x86_feature_detected!("avx2") && {
        // Safety: AVX2 is present.
        unsafe { x86::pass_h::<C>(src, co, cols.clone(), shift, &mut out) };
        true
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        pass_h_scalar::<C>(src, co, cols, shift, &mut out);
    }
    Plane {
        width: ow,
        height: src.height,
        channels: C,
        data: out,
    }
}

/// The horizontal pass one output pixel at a time: the definition the SIMD path must equal.
fn pass_h_scalar<const C: usize>(
    src: &Plane,
    co: &Coeffs,
    cols: std::ops::Range<usize>,
    shift: usize,
    out: &mut [u8],
) {
    let ow = cols.len();
    for y in 0..src.height {
        let line = &src.data[y * src.width * C..(y + 1) * src.width * C];
        let dst = &mut out[y * ow * C..(y + 1) * ow * C];
        for (xo, xx) in cols.clone().enumerate() {
            let (xmin, n) = co.bounds[xx];
            let k = &co.fixed[xx * co.ksize..xx * co.ksize + n];
            let px = &line[(xmin - shift) * C..(xmin - shift + n) * C];
            let mut ss = [1i32 << (PRECISION_BITS - 1); C];
            for (p, &kv) in px.chunks_exact(C).zip(k) {
                for ci in 0..C {
                    ss[ci] = ss[ci].wrapping_add(p[ci] as i32 * kv);
                }
            }
            for ci in 0..C {
                dst[xo * C + ci] = clip8(ss[ci]);
            }
        }
    }
}

/// The horizontal pass eight output pixels at a time. Each row is split into one 32-bit
/// plane per channel, so every output's taps are one contiguous run that multiplies against
/// its coefficients (zero-padded to whole vectors) lane by lane; the eight outputs' partial
/// sums are then folded into one vector. Integer sums wrap exactly as the scalar loop's do, so
/// the result is identical, not just close.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Coeffs, Plane, PRECISION_BITS};
    use std::arch::x86_64::*;

    /// Lane j of the result is the sum of the eight lanes of `a[j]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn fold8(a: &[__m256i; 8]) -> __m256i {
        let h01 = _mm256_hadd_epi32(a[0], a[1]);
        let h23 = _mm256_hadd_epi32(a[2], a[3]);
        let h45 = _mm256_hadd_epi32(a[4], a[5]);
        let h67 = _mm256_hadd_epi32(a[6], a[7]);
        // Lanes 0-3: sums of a[0..4]'s low halves, 4-7: of their high halves (then a[4..8]).
        let q0 = _mm256_hadd_epi32(h01, h23);
        let q1 = _mm256_hadd_epi32(h45, h67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(q0, q1),
            _mm256_permute2x128_si256::<0x31>(q0, q1),
        )
    }

    /// # Safety
    /// The CPU must support AVX2. `out` holds `src.height * cols.len() * C` bytes and every
    /// output's taps lie inside `src` (as for the scalar pass).
    #[target_feature(enable = "avx2")]
    pub unsafe fn pass_h<const C: usize>(
        src: &Plane,
        co: &Coeffs,
        cols: std::ops::Range<usize>,
        shift: usize,
        out: &mut [u8],
    ) {
        // Every output gets the same number of tap vectors (neighbouring outputs' tap counts
        // differ by at most one), so the loops below have fixed trip counts.
        let vecs = cols
            .clone()
            .map(|xx| co.bounds[xx].1.div_ceil(8))
            .max()
            .unwrap_or(0);
        match vecs {
            0 | 1 => run::<C, 1>(src, co, cols, shift, out, 1),
            2 => run::<C, 2>(src, co, cols, shift, out, 2),
            3 => run::<C, 3>(src, co, cols, shift, out, 3),
            _ => run::<C, 0>(src, co, cols, shift, out, vecs),
        }
    }

    /// `vecs` tap vectors per output; `V` is the same count fixed at compile time for the
    /// common short filters (0: not fixed).
    #[target_feature(enable = "avx2")]
    unsafe fn run<const C: usize, const V: usize>(
        src: &Plane,
        co: &Coeffs,
        cols: std::ops::Range<usize>,
        shift: usize,
        out: &mut [u8],
        vecs: usize,
    ) {
        let ow = cols.len();
        let w = src.width;
        let vecs = if V > 0 { V } else { vecs };
        let per = vecs * 8;
        // Per output: its first source column and `per` taps, zero past its own.
        let mut first = Vec::with_capacity(ow);
        let mut taps = vec![0i32; ow * per];
        for (o, xx) in cols.clone().enumerate() {
            let (xmin, n) = co.bounds[xx];
            assert!(xmin >= shift && xmin - shift + n <= w);
            first.push(xmin - shift);
            taps[o * per..o * per + n].copy_from_slice(&co.fixed[xx * co.ksize..xx * co.ksize + n]);
        }
        // Zero columns after the row: a run reads up to `per - 1` past its first tap.
        let pw = w + per;
        let mut planes = vec![0i32; C * pw];
        let round = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
        let (zero, max) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
        let mut lanes = [[0i32; 8]; C];
        for y in 0..src.height {
            let line = &src.data[y * w * C..(y + 1) * w * C];
            for (x, px) in line.chunks_exact(C).enumerate() {
                for c in 0..C {
                    planes[c * pw + x] = px[c] as i32;
                }
            }
            let dst = &mut out[y * ow * C..(y + 1) * ow * C];
            let mut xo = 0;
            while xo + 8 <= ow {
                for (c, lane) in lanes.iter_mut().enumerate() {
                    let plane = planes.as_ptr().add(c * pw);
                    let mut acc = [zero; 8];
                    for (j, a) in acc.iter_mut().enumerate() {
                        let p = plane.add(first[xo + j]);
                        let k = taps.as_ptr().add((xo + j) * per);
                        // Safety: first + per <= w + per = pw; taps hold `per` per output.
                        for v in 0..vecs {
                            let pv = _mm256_loadu_si256(p.add(8 * v).cast());
                            let kv = _mm256_loadu_si256(k.add(8 * v).cast());
                            *a = _mm256_add_epi32(*a, _mm256_mullo_epi32(pv, kv));
                        }
                    }
                    let s = _mm256_add_epi32(fold8(&acc), round);
                    // clip8: v >> 22 clamped to 0..=255 equals its three-way branch.
                    let s = _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(s);
                    let s = _mm256_min_epi32(_mm256_max_epi32(s, zero), max);
                    _mm256_storeu_si256(lane.as_mut_ptr().cast(), s);
                }
                let d = &mut dst[xo * C..(xo + 8) * C];
                for (j, px) in d.chunks_exact_mut(C).enumerate() {
                    for c in 0..C {
                        px[c] = lanes[c][j] as u8;
                    }
                }
                xo += 8;
            }
            // The last outputs (fewer than eight) one at a time.
            for o in xo..ow {
                for c in 0..C {
                    let run = &planes[c * pw + first[o]..c * pw + first[o] + per];
                    let mut s = 1i32 << (PRECISION_BITS - 1);
                    for (&p, &k) in run.iter().zip(&taps[o * per..(o + 1) * per]) {
                        s = s.wrapping_add(p.wrapping_mul(k));
                    }
                    dst[o * C + c] = super::clip8(s);
                }
            }
        }
    }
}

/// Vertical pass: output rows `rows` over every column of `src`; `shift` as in `pass_h`.
fn pass_v(src: &Plane, co: &Coeffs, rows: std::ops::Range<usize>, shift: usize) -> Plane {
    let w = src.width * src.channels;
    let mut out = vec![0u8; rows.len() * w];
    let mut acc = vec![0i32; w];
    for (yo, yy) in rows.clone().enumerate() {
        let (ymin, n) = co.bounds[yy];
        let k = &co.fixed[yy * co.ksize..yy * co.ksize + n];
        acc.fill(1 << (PRECISION_BITS - 1));
        for (y, &kv) in k.iter().enumerate() {
            let r = ymin - shift + y;
            mul_add_row(&mut acc, &src.data[r * w..(r + 1) * w], kv);
        }
        clip_row(&mut out[yo * w..(yo + 1) * w], &acc);
    }
    Plane {
        width: src.width,
        height: rows.len(),
        channels: src.channels,
        data: out,
    }
}

/// The source range the outputs `range` read from.
fn span(co: &Coeffs, range: &std::ops::Range<usize>) -> (usize, usize) {
    let lo = range.clone().map(|i| co.bounds[i].0).min().unwrap_or(0);
    let hi = range
        .clone()
        .map(|i| co.bounds[i].0 + co.bounds[i].1)
        .max()
        .unwrap_or(lo);
    (lo, hi)
}

fn sub_rows(p: &Plane, lo: usize, hi: usize) -> Plane {
    let w = p.width * p.channels;
    Plane {
        width: p.width,
        height: hi - lo,
        channels: p.channels,
        data: p.data[lo * w..hi * w].to_vec(),
    }
}

fn sub_cols(p: &Plane, lo: usize, hi: usize) -> Plane {
    let c = p.channels;
    let mut data = Vec::with_capacity(p.height * (hi - lo) * c);
    for y in 0..p.height {
        data.extend_from_slice(&p.data[(y * p.width + lo) * c..(y * p.width + hi) * c]);
    }
    Plane {
        width: hi - lo,
        height: p.height,
        channels: c,
        data,
    }
}

/// A resize to `out_w` x `out_h` of which only `[left, left + crop_w) x [top, top + crop_h)` is kept.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub out_w: usize,
    pub out_h: usize,
    pub left: usize,
    pub top: usize,
    pub crop_w: usize,
    pub crop_h: usize,
    pub filter: Interpolation,
}

/// BICUBIC (or BILINEAR) resize of `src`, returning only the window's pixels.
pub fn bicubic_window(src: &Plane, win: Window) -> Plane {
    let Window {
        out_w,
        out_h,
        left,
        top,
        crop_w,
        crop_h,
        ..
    } = win;
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    let cols = left..left + crop_w;
    let rows = top..top + crop_h;
    let ch = coeffs(src.width, out_w, win.filter);
    let cv = coeffs(src.height, out_h, win.filter);
    match (need_h, need_v) {
        (false, false) => sub_cols(&sub_rows(src, top, top + crop_h), left, left + crop_w),
        (true, false) => pass_h(&sub_rows(src, top, top + crop_h), &ch, cols, 0),
        (false, true) => pass_v(&sub_cols(src, left, left + crop_w), &cv, rows, 0),
        (true, true) if vertical_first(src.width, src.height, out_w, out_h) => {
            let (lo, hi) = span(&ch, &cols);
            let tmp = pass_v(&sub_cols(src, lo, hi), &cv, rows, 0);
            pass_h(&tmp, &ch, cols, lo)
        }
        (true, true) => {
            let (lo, hi) = span(&cv, &rows);
            let tmp = pass_h(&sub_rows(src, lo, hi), &ch, cols, 0);
            pass_v(&tmp, &cv, rows, lo)
        }
    }
}

/// BICUBIC for 16-bit grayscale (PIL mode "I;16"): double coefficients, each pass rounded and
/// stored as 16 bits the way Pillow's 16bpc resampler does.
pub fn bicubic_window_i32(
    src: &[i32],
    width: usize,
    height: usize,
    win: Window,
    sixteen: bool,
) -> Vec<i32> {
    let Window {
        out_w,
        out_h,
        left,
        top,
        crop_w,
        crop_h,
        ..
    } = win;
    // Pillow stores each pass's result in a 16-bit image ("I;16") byte by byte, clipping each
    // byte; an "I" image keeps the rounded 32-bit sum.
    let round = |f: f64| {
        let v = if f >= 0.0 {
            (f + 0.5) as i32
        } else {
            (f - 0.5) as i32
        };
        if !sixteen {
            return v;
        }
        let lo = (v % 256).clamp(0, 255);
        let hi = (v >> 8).clamp(0, 255);
        hi * 256 + lo
    };
    let (need_h, need_v) = (out_w != width, out_h != height);
    let ch = coeffs(width, out_w, win.filter);
    let cv = coeffs(height, out_h, win.filter);
    let h_pass = |src: &[i32], rows: usize, w: usize| -> Vec<i32> {
        let mut t = vec![0i32; rows * out_w];
        for y in 0..rows {
            for xo in 0..out_w {
                let (xmin, n) = ch.bounds[xo];
                let k = &ch.float[xo * ch.ksize..];
                t[y * out_w + xo] =
                    round((0..n).map(|x| src[y * w + xmin + x] as f64 * k[x]).sum());
            }
        }
        t
    };
    let v_pass = |src: &[i32], w: usize| -> Vec<i32> {
        let mut t = vec![0i32; out_h * w];
        for yo in 0..out_h {
            let (ymin, n) = cv.bounds[yo];
            let k = &cv.float[yo * cv.ksize..];
            for x in 0..w {
                t[yo * w + x] = round((0..n).map(|y| src[(ymin + y) * w + x] as f64 * k[y]).sum());
            }
        }
        t
    };
    let full = match (need_h, need_v) {
        (false, false) => src.to_vec(),
        (true, false) => h_pass(src, height, width),
        (false, true) => v_pass(src, width),
        (true, true) if vertical_first(width, height, out_w, out_h) => {
            h_pass(&v_pass(src, width), out_h, width)
        }
        (true, true) => v_pass(&h_pass(src, height, width), out_w),
    };
    let mut out = Vec::with_capacity(crop_w * crop_h);
    for y in top..top + crop_h {
        out.extend_from_slice(&full[y * out_w + left..y * out_w + left + crop_w]);
    }
    out
}

/// PIL's NEAREST resize (an affine scale), restricted to the kept window.
pub fn nearest_window(src: &Plane, win: Window) -> Plane {
    let Window {
        out_w,
        out_h,
        left,
        top,
        crop_w,
        crop_h,
        ..
    } = win;
    let c = src.channels;
    let index = |in_size: usize, out_size: usize| -> Vec<usize> {
        let step = in_size as f64 / out_size as f64;
        let mut pos = step * 0.5;
        let mut v = Vec::with_capacity(out_size);
        for _ in 0..out_size {
            v.push((pos.max(0.0) as usize).min(in_size - 1));
            pos += step;
        }
        v
    };
    let xs = index(src.width, out_w);
    let ys = index(src.height, out_h);
    let mut out = Vec::with_capacity(crop_w * crop_h * c);
    for &y in &ys[top..top + crop_h] {
        for &x in &xs[left..left + crop_w] {
            out.extend_from_slice(&src.data[(y * src.width + x) * c..(y * src.width + x + 1) * c]);
        }
    }
    Plane {
        width: crop_w,
        height: crop_h,
        channels: c,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_sum_to_one() {
        for filter in [Interpolation::Bicubic, Interpolation::Bilinear] {
            for (i, o) in [(500, 224), (224, 224), (100, 224), (375, 224), (3, 224)] {
                let c = coeffs(i, o, filter);
                for xx in 0..o {
                    let (_, n) = c.bounds[xx];
                    let s: f64 = c.float[xx * c.ksize..xx * c.ksize + n].iter().sum();
                    assert!((s - 1.0).abs() < 1e-9);
                }
            }
        }
    }

    /// The AVX2 horizontal pass equals the scalar one byte for byte: every channel count,
    /// upscales and reductions up to the run-time tap-count path, windows with a shift.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_horizontal_pass_equals_scalar() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        fn check<const C: usize>(in_w: usize, out_w: usize, cols: std::ops::Range<usize>) {
            let co = coeffs(in_w, out_w, Interpolation::Bicubic);
            let (lo, hi) = span(&co, &cols);
            let height = 5;
            let data = (0..height * (hi - lo) * C)
                .map(|i| ((i * 7919 + in_w) % 256) as u8)
                .collect();
            let src = Plane {
                width: hi - lo,
                height,
                channels: C,
                data,
            };
            let len = height * cols.len() * C;
            let (mut want, mut got) = (vec![0u8; len], vec![1u8; len]);
            pass_h_scalar::<C>(&src, &co, cols.clone(), lo, &mut want);
            // Safety: AVX2 checked above.
            unsafe { x86::pass_h::<C>(&src, &co, cols.clone(), lo, &mut got) };
            assert_eq!(got, want, "{C} channels, {in_w} -> {out_w}, {cols:?}");
        }
        for (in_w, out_w) in [
            (500, 298),
            (224, 224),
            (100, 224),
            (1000, 224),
            (4000, 224),
            (37, 9),
        ] {
            for cols in [0..out_w, out_w / 5..out_w - out_w / 7] {
                check::<1>(in_w, out_w, cols.clone());
                check::<2>(in_w, out_w, cols.clone());
                check::<3>(in_w, out_w, cols.clone());
                check::<4>(in_w, out_w, cols);
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let p = Plane {
            width: 50,
            height: 40,
            channels: 3,
            data: vec![77; 50 * 40 * 3],
        };
        let r = bicubic_window(
            &p,
            Window {
                out_w: 28,
                out_h: 22,
                left: 3,
                top: 0,
                crop_w: 22,
                crop_h: 22,
                filter: Interpolation::Bicubic,
            },
        );
        assert!(r.data.iter().all(|&v| v == 77));
    }
}
