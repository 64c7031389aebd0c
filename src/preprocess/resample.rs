//! PIL's resampling, computed the way `Image.resize` does it: BICUBIC (a = -0.5) as a separable
//! convolution whose support grows with the reduction, coefficients in 22-bit fixed point,
//! horizontal pass then vertical pass, each rounded and clipped to 8 bits; NEAREST for palette
//! and bilevel images. Only the output rectangle that is kept (the centre crop) is computed:
//! every output pixel depends on the input alone, so the values equal PIL's full resize.

const PRECISION_BITS: u32 = 32 - 8 - 2;

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

pub fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
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
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
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

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
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
    Plane {
        width: ow,
        height: src.height,
        channels: C,
        data: out,
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
            let row = &src.data[r * w..(r + 1) * w];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(p as i32 * kv);
            }
        }
        for (d, &a) in out[yo * w..(yo + 1) * w].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
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
}

/// BICUBIC resize of `src`, returning only the window's pixels.
pub fn bicubic_window(src: &Plane, win: Window) -> Plane {
    let Window {
        out_w,
        out_h,
        left,
        top,
        crop_w,
        crop_h,
    } = win;
    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    let cols = left..left + crop_w;
    let rows = top..top + crop_h;
    let ch = coeffs(src.width, out_w);
    let cv = coeffs(src.height, out_h);
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
pub fn bicubic_window_i32(src: &[i32], width: usize, height: usize, win: Window) -> Vec<i32> {
    let Window {
        out_w,
        out_h,
        left,
        top,
        crop_w,
        crop_h,
    } = win;
    // Pillow stores each pass's result in a 16-bit image byte by byte, clipping each byte.
    let round = |f: f64| {
        let v = if f >= 0.0 {
            (f + 0.5) as i32
        } else {
            (f - 0.5) as i32
        };
        let lo = (v % 256).clamp(0, 255);
        let hi = (v >> 8).clamp(0, 255);
        hi * 256 + lo
    };
    let (need_h, need_v) = (out_w != width, out_h != height);
    let ch = coeffs(width, out_w);
    let cv = coeffs(height, out_h);
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
        for (i, o) in [(500, 224), (224, 224), (100, 224), (375, 224), (3, 224)] {
            let c = coeffs(i, o);
            for xx in 0..o {
                let (_, n) = c.bounds[xx];
                let s: f64 = c.float[xx * c.ksize..xx * c.ksize + n].iter().sum();
                assert!((s - 1.0).abs() < 1e-9);
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
            },
        );
        assert!(r.data.iter().all(|&v| v == 77));
    }
}
