//! Linear probes (the CLIP paper's protocol): multinomial logistic regression with an L2
//! penalty on frozen image features, the objective of scikit-learn's
//! `LogisticRegression(C=..., solver="lbfgs")`:
//! `mean_i CE(W x_i + b, y_i) + ||W||^2 / (2 C n)` (the intercept is not penalised), solved by
//! L-BFGS from zero weights as scikit-learn solves it: [`crate::lbfgs`], scipy's L-BFGS-B
//! without bounds, with scikit-learn's settings. The loss and gradient are in f64, their two
//! matrix products through candle's CPU matmul.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Features and labels, row-major `[n, dim]`.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub x: Vec<f32>,
    pub y: Vec<usize>,
    pub dim: usize,
    /// Rows are used at unit L2 norm, scaled in f64 where they are read (as scikit-learn's
    /// callers normalise their float64 copy), so the f32 features are never rounded again.
    pub normalized: bool,
}

impl Dataset {
    pub fn new(x: Vec<f32>, y: Vec<usize>, dim: usize) -> Self {
        Self {
            x,
            y,
            dim,
            normalized: false,
        }
    }
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            x.extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
        }
        Dataset {
            x,
            y: idx.iter().map(|&i| self.y[i]).collect(),
            ..*self
        }
    }
    /// Both sets' rows, `self` first (both normalised or neither).
    pub fn concat(&self, other: &Dataset) -> Dataset {
        debug_assert_eq!(self.normalized, other.normalized);
        let mut x = self.x.clone();
        x.extend_from_slice(&other.x);
        let mut y = self.y.clone();
        y.extend_from_slice(&other.y);
        Dataset { x, y, ..*self }
    }
    /// Use each row at unit L2 norm (rows of zeros stay zero).
    pub fn l2_normalize(&mut self) {
        self.normalized = true;
    }
    /// Row `i` in f64, divided by its L2 norm when normalised.
    fn row_into(&self, i: usize, out: &mut [f64]) {
        let row = &self.x[i * self.dim..(i + 1) * self.dim];
        out.iter_mut().zip(row).for_each(|(o, &v)| *o = v as f64);
        if self.normalized {
            let n = out.iter().map(|v| v * v).sum::<f64>().sqrt();
            if n > 0.0 {
                out.iter_mut().for_each(|v| *v /= n);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    pub c: f64,
    pub max_iter: u64,
    /// Gradient-norm tolerance (scikit-learn's `tol`, 1e-4).
    pub tol: f64,
}

/// A fitted classifier over `classes` classes, as scikit-learn fits one: only the classes
/// the training labels hold are modelled (`modelled`, increasing); with two of them, one
/// binomial weight vector for the second (`binary`), otherwise one row per modelled class.
/// `coef` holds those rows, each `dim` weights then the intercept.
#[derive(Debug, Clone)]
pub struct Classifier {
    pub classes: usize,
    pub dim: usize,
    pub modelled: Vec<usize>,
    pub binary: bool,
    pub coef: Vec<f64>,
    pub iterations: u64,
    /// Why the solver stopped.
    pub stop: crate::lbfgs::Stop,
    pub loss: f64,
}

struct Objective {
    x: Tensor,
    /// Labels as positions among the modelled classes (binary: 0 or 1).
    y: Vec<usize>,
    n: usize,
    d: usize,
    /// Weight rows: the modelled classes, or 1 for a binomial fit.
    k: usize,
    binary: bool,
    /// 1 / (C n)
    l2: f64,
}

impl Objective {
    fn new(data: &Dataset, modelled: &[usize], c: f64) -> Result<Self, Error> {
        let n = data.len();
        let mut x = vec![0.0f64; n * data.dim];
        x.par_chunks_mut(data.dim.max(1))
            .enumerate()
            .for_each(|(i, row)| data.row_into(i, row));
        let binary = modelled.len() == 2;
        Ok(Self {
            x: Tensor::from_vec(x, (n, data.dim), &Device::Cpu)?,
            y: data
                .y
                .iter()
                .map(|y| {
                    modelled
                        .binary_search(y)
                        .expect("modelled from these labels")
                })
                .collect(),
            n,
            d: data.dim,
            k: if binary { 1 } else { modelled.len() },
            binary,
            l2: 1.0 / (c * n as f64),
        })
    }

    fn weights(&self, p: &[f64]) -> candle_core::Result<(Tensor, Vec<f64>)> {
        let (d, k) = (self.d, self.k);
        let mut w = Vec::with_capacity(k * d);
        let mut b = Vec::with_capacity(k);
        for row in p.chunks(d + 1) {
            w.extend_from_slice(&row[..d]);
            b.push(row[d]);
        }
        Ok((Tensor::from_vec(w, (k, d), &Device::Cpu)?, b))
    }

    fn loss_grad(&self, p: &[f64]) -> candle_core::Result<(f64, Vec<f64>)> {
        let (n, d, k) = (self.n, self.d, self.k);
        let (w, b) = self.weights(p)?;
        let z: Vec<f64> = self
            .x
            .matmul(&w.t()?)?
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1()?;
        // Each row's loss, and its gradient with respect to the row's raw scores.
        let mut g = z;
        let ce: f64 = if self.binary {
            // scikit-learn's half binomial loss: log(1 + e^z) - t z, gradient sigmoid(z) - t.
            g.par_iter_mut()
                .zip(self.y.par_iter())
                .map(|(v, &y)| {
                    let z = *v + b[0];
                    let t = y as f64;
                    let (log1pexp, sig) = if z > 0.0 {
                        let e = (-z).exp();
                        (z + e.ln_1p(), 1.0 / (1.0 + e))
                    } else {
                        let e = z.exp();
                        (e.ln_1p(), e / (1.0 + e))
                    };
                    *v = sig - t;
                    log1pexp - t * z
                })
                .sum()
        } else {
            // Softmax rows minus the one-hot targets, and each row's cross-entropy.
            g.par_chunks_mut(k)
                .zip(self.y.par_iter())
                .map(|(row, &y)| {
                    row.iter_mut().zip(&b).for_each(|(v, bi)| *v += bi);
                    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let zy = row[y] - m;
                    let mut s = 0.0;
                    for v in row.iter_mut() {
                        *v = (*v - m).exp();
                        s += *v;
                    }
                    let lse_minus_zy = s.ln() - zy;
                    for v in row.iter_mut() {
                        *v /= s;
                    }
                    row[y] -= 1.0;
                    lse_minus_zy
                })
                .sum()
        };
        let gt = Tensor::from_vec(g, (n, k), &Device::Cpu)?;
        let gw: Vec<f64> = gt.t()?.matmul(&self.x)?.flatten_all()?.to_vec1()?;
        let gb: Vec<f64> = gt.sum(0)?.to_vec1()?;
        let inv_n = 1.0 / n as f64;
        let mut grad = Vec::with_capacity(k * (d + 1));
        let mut penalty = 0.0;
        for c in 0..k {
            for j in 0..d {
                let wv = p[c * (d + 1) + j];
                penalty += wv * wv;
                grad.push(gw[c * d + j] * inv_n + self.l2 * wv);
            }
            grad.push(gb[c] * inv_n);
        }
        let loss = ce * inv_n + 0.5 * self.l2 * penalty;
        Ok((loss, grad))
    }
}

/// Fits on `data` (labels `< classes`), from `init` (or zeros).
pub fn fit(
    data: &Dataset,
    classes: usize,
    opts: FitOptions,
    init: Option<&Classifier>,
) -> Result<Classifier, Error> {
    if data.is_empty() {
        return Err(Error::Usage("no training images".into()));
    }
    if !(opts.c.is_finite() && opts.c > 0.0) {
        return Err(Error::Usage(format!(
            "--c must be positive (got {})",
            opts.c
        )));
    }
    if data.x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Usage(
            "the image features hold NaN or infinite values (a broken checkpoint?)".into(),
        ));
    }
    if let Some(&bad) = data.y.iter().find(|&&y| y >= classes) {
        return Err(Error::Usage(format!(
            "label {bad} is out of range for {classes} classes"
        )));
    }
    let mut modelled = data.y.clone();
    modelled.sort_unstable();
    modelled.dedup();
    if modelled.len() < 2 {
        return Err(Error::Usage(format!(
            "the training images are all of one class ({}); a probe needs two or more",
            modelled[0]
        )));
    }
    let d = data.dim;
    let obj = Objective::new(data, &modelled, opts.c)?;
    let p0 = match init {
        Some(c) if c.modelled == modelled => c.coef.clone(),
        _ => vec![0.0; obj.k * (d + 1)],
    };
    let r = crate::lbfgs::minimize(
        |p| obj.loss_grad(p),
        p0,
        &crate::lbfgs::Options::sklearn(opts.max_iter, opts.tol),
    )?;
    Ok(Classifier {
        classes,
        dim: d,
        binary: obj.binary,
        modelled,
        stop: r.stop,
        coef: r.x,
        iterations: r.iterations,
        loss: r.f,
    })
}

impl Classifier {
    /// Decision scores `[n, classes]` (row-major) of `data`'s rows; classes the training
    /// labels did not hold score minus infinity. A binomial fit's score `z` is split as
    /// `-z/2` and `z/2` over its two classes (the same ranking: the second wins when z > 0).
    pub fn scores(&self, data: &Dataset) -> Vec<f64> {
        let (d, k) = (self.dim, self.classes);
        let mut out = vec![f64::NEG_INFINITY; data.len() * k];
        let raw =
            |w: &[f64], x: &[f64]| w[d] + w[..d].iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        out.par_chunks_mut(k.max(1)).enumerate().for_each_init(
            || vec![0.0f64; d],
            |x, (i, o)| {
                data.row_into(i, x);
                if self.binary {
                    let z = raw(&self.coef, x);
                    o[self.modelled[0]] = -0.5 * z;
                    o[self.modelled[1]] = 0.5 * z;
                } else {
                    for (r, &c) in self.modelled.iter().enumerate() {
                        o[c] = raw(&self.coef[r * (d + 1)..(r + 1) * (d + 1)], x);
                    }
                }
            },
        );
        out
    }

    /// Per row, the `k` best classes, best first (ties: the lower class first, as argmax).
    pub fn topk(&self, data: &Dataset, k: usize) -> Vec<Vec<u32>> {
        topk_rows(&self.scores(data), self.classes, k)
    }
}

/// Per row of `scores` (`classes` per row), the `k` best classes, best first (ties: the lower
/// class first, as argmax).
pub fn topk_rows(scores: &[f64], classes: usize, k: usize) -> Vec<Vec<u32>> {
    scores
        .chunks(classes.max(1))
        .map(|row| {
            let mut idx: Vec<u32> = (0..row.len() as u32).collect();
            idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            idx.truncate(k);
            idx
        })
        .collect()
}

/// Top-1, top-5 and mean per-class recall (fractions) of `top` against `labels`; the mean is
/// over the classes present in `labels`.
pub fn accuracy(top: &[Vec<u32>], labels: &[usize], classes: usize) -> (f64, f64, f64) {
    let n = labels.len().max(1) as f64;
    let (mut t1, mut t5) = (0usize, 0usize);
    let mut per = vec![(0usize, 0usize); classes];
    for (t, &y) in top.iter().zip(labels) {
        let hit1 = t.first() == Some(&(y as u32));
        t1 += hit1 as usize;
        t5 += t.iter().take(5).any(|&p| p as usize == y) as usize;
        per[y].0 += hit1 as usize;
        per[y].1 += 1;
    }
    let present: Vec<f64> = per
        .iter()
        .filter(|p| p.1 > 0)
        .map(|p| p.0 as f64 / p.1 as f64)
        .collect();
    let mpc = present.iter().sum::<f64>() / present.len().max(1) as f64;
    (t1 as f64 / n, t5 as f64 / n, mpc)
}

/// `rows` in a fixed-seed order (SplitMix64 from `seed`, Fisher-Yates): the same on every
/// machine and run.
fn shuffle(rows: &mut [usize], seed: u64) {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..rows.len()).rev() {
        rows.swap(i, (next() % (i as u64 + 1)) as usize);
    }
}

/// Positions of each class's rows, in order.
fn by_class(labels: &[usize]) -> Vec<Vec<usize>> {
    let classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut by_class = vec![Vec::new(); classes];
    for (i, &y) in labels.iter().enumerate() {
        by_class[y].push(i);
    }
    by_class
}

/// A deterministic validation split: per class, `fraction` of its rows (at least one, and at
/// least one left to train on when the class has two or more), picked by a fixed-seed shuffle.
/// Returns (train, val) positions, each increasing.
pub fn split_validation(labels: &[usize], fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let mut val = Vec::new();
    for (c, rows) in by_class(labels).iter_mut().enumerate() {
        if rows.len() < 2 {
            continue;
        }
        shuffle(rows, 0x9E37_79B9_7F4A_7C15u64 ^ c as u64);
        let take = ((rows.len() as f64 * fraction).round() as usize).clamp(1, rows.len() - 1);
        val.extend_from_slice(&rows[..take]);
    }
    val.sort_unstable();
    let is_val: std::collections::HashSet<usize> = val.iter().copied().collect();
    let train = (0..labels.len()).filter(|i| !is_val.contains(i)).collect();
    (train, val)
}

/// A few-shot training set: per class, `k` rows (all of them when it has fewer) picked by a
/// shuffle seeded with `seed` and the class. Returns the positions, increasing.
pub fn fewshot(labels: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let mut out = Vec::new();
    for (c, rows) in by_class(labels).iter_mut().enumerate() {
        shuffle(rows, seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ c as u64);
        out.extend_from_slice(&rows[..k.min(rows.len())]);
    }
    out.sort_unstable();
    out
}

/// One point of a C search.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    pub c: f64,
    pub val_top1: f64,
    pub iterations: u64,
}

/// Picks C by validation top-1 with the CLIP paper's parametric binary search: C = 1e-6,
/// 1e-4, ..., 1e6, then around the best so far half the last spacing on either side, until the
/// spacing is an eighth of a decade (the paper's 96 log-spaced steps over 1e-6..1e6). Ties go
/// to the smaller C (the stronger penalty). Each fit starts from zeros, as a scikit-learn sweep
/// does, so a trial's accuracy is the one scikit-learn gives at that C. `trial` is called after
/// each fit.
pub fn search_c(
    train: &Dataset,
    val: &Dataset,
    classes: usize,
    max_iter: u64,
    tol: f64,
    mut trial: impl FnMut(&Trial),
) -> Result<(f64, Vec<Trial>), Error> {
    // Exponents in eighths of a decade.
    const RANGE: i32 = 48;
    let mut tried: Vec<(i32, Trial)> = Vec::new();
    let mut run = |e: i32, tried: &mut Vec<(i32, Trial)>| -> Result<(), Error> {
        if e.abs() > RANGE || tried.iter().any(|(x, _)| *x == e) {
            return Ok(());
        }
        let c = 10f64.powf(e as f64 / 8.0);
        let f = fit(train, classes, FitOptions { c, max_iter, tol }, None)?;
        let (t1, _, _) = accuracy(&f.topk(val, 1), &val.y, classes);
        let t = Trial {
            c,
            val_top1: t1,
            iterations: f.iterations,
        };
        trial(&t);
        tried.push((e, t));
        Ok(())
    };
    let best = |tried: &[(i32, Trial)]| {
        tried
            .iter()
            .copied()
            .reduce(|b, x| {
                if x.1.val_top1 > b.1.val_top1 || (x.1.val_top1 == b.1.val_top1 && x.0 < b.0) {
                    x
                } else {
                    b
                }
            })
            .expect("at least one trial")
    };
    for e in (-RANGE..=RANGE).step_by(16) {
        run(e, &mut tried)?;
    }
    let mut step = 16;
    while step > 1 {
        step /= 2;
        let (b, _) = best(&tried);
        run(b - step, &mut tried)?;
        run(b + step, &mut tried)?;
    }
    let (_, t) = best(&tried);
    Ok((t.c, tried.into_iter().map(|(_, t)| t).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let data = Dataset::new(
            vec![
                0.5, -1.0, 2.0, 0.1, -0.3, 0.7, 1.5, 1.0, -2.0, 0.2, 0.0, 1.0,
            ],
            vec![0, 1, 2, 1],
            3,
        );
        // Multinomial (three classes, four rows of weights) and binomial (classes 1 and 2 of
        // the rows that hold them: one row).
        let two = data.select(&[1, 2, 3]);
        for (data, modelled, rows) in [(&data, vec![0, 1, 2], 3), (&two, vec![1, 2], 1)] {
            let obj = Objective::new(data, &modelled, 0.7).unwrap();
            assert_eq!(obj.k, rows);
            let p: Vec<f64> = (0..rows * 4)
                .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.1)
                .collect();
            let (_, g) = obj.loss_grad(&p).unwrap();
            for i in 0..p.len() {
                let h = 1e-6;
                let (mut a, mut b) = (p.clone(), p.clone());
                a[i] += h;
                b[i] -= h;
                let fd = (obj.loss_grad(&a).unwrap().0 - obj.loss_grad(&b).unwrap().0) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 1e-7,
                    "{rows} rows, param {i}: {fd} vs {}",
                    g[i]
                );
            }
        }
    }

    /// The seeded 4-class problem of scripts/probe_reference.py, and scikit-learn's fits of it.
    fn seeded() -> (serde_json::Value, Dataset) {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/probe/expected.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        let s = v["synthetic"].clone();
        let x: Vec<f32> = serde_json::from_value(s["x"].clone()).unwrap();
        let y: Vec<usize> = serde_json::from_value(s["y"].clone()).unwrap();
        let d = s["dim"].as_u64().unwrap() as usize;
        (s, Dataset::new(x, y, d))
    }

    /// The relative distance of our rows of weights and intercepts from scikit-learn's
    /// (`coef` row-major without intercepts, then `intercept`).
    fn coef_distance(ours: &Classifier, fit: &serde_json::Value) -> f64 {
        let coef: Vec<f64> = serde_json::from_value(fit["coef"].clone()).unwrap();
        let icpt: Vec<f64> = serde_json::from_value(fit["intercept"].clone()).unwrap();
        let d = ours.dim;
        let (mut diff, mut norm) = (0.0, 0.0);
        for (r, b) in icpt.iter().enumerate() {
            for j in 0..=d {
                let t = if j < d { coef[r * d + j] } else { *b };
                diff += (ours.coef[r * (d + 1) + j] - t).powi(2);
                norm += t * t;
            }
        }
        (diff / norm).sqrt()
    }

    /// scikit-learn's fits of a seeded 4-class problem (scripts/probe_reference.py).
    #[test]
    fn fits_match_scikit_learn_on_a_seeded_problem() {
        let (s, data) = seeded();
        let k = s["classes"].as_u64().unwrap() as usize;
        for f in s["fits"].as_array().unwrap() {
            let c = f["C"].as_f64().unwrap();
            let ours = fit(
                &data,
                k,
                FitOptions {
                    c,
                    max_iter: 1000,
                    tol: 1e-4,
                },
                None,
            )
            .unwrap();
            assert!(ours.stop.converged(), "C={c}");
            // The same iterates as scipy's L-BFGS-B: the same iteration count, and the
            // coefficients and loss equal to rounding.
            assert_eq!(ours.iterations, f["n_iter"].as_u64().unwrap(), "C={c}");
            let dist = coef_distance(&ours, f);
            assert!(dist < 1e-10, "C={c}: relative coef diff {dist}");
            let theirs = f["loss"].as_f64().unwrap();
            assert!(
                (ours.loss - theirs).abs() <= 1e-12 * theirs.max(1.0),
                "C={c}: {} vs {theirs}",
                ours.loss
            );
            let want: Vec<u32> = serde_json::from_value(f["predictions"].clone()).unwrap();
            let got: Vec<u32> = ours.topk(&data, 1).iter().map(|t| t[0]).collect();
            assert_eq!(got, want, "C={c}");
        }
    }

    /// scikit-learn on subsets of the seeded problem: two classes (its binomial fit) and
    /// three of four (only the classes the labels hold are modelled).
    #[test]
    fn subsets_are_fitted_as_scikit_learn_fits_them() {
        let (s, all) = seeded();
        let k = 4;
        for case in s["subsets"].as_array().unwrap() {
            let keep: Vec<usize> = serde_json::from_value(case["classes"].clone()).unwrap();
            let c = case["C"].as_f64().unwrap();
            let rows: Vec<usize> = (0..all.len())
                .filter(|&i| keep.contains(&all.y[i]))
                .collect();
            let data = all.select(&rows);
            let opts = FitOptions {
                c,
                max_iter: 1000,
                tol: 1e-4,
            };
            let ours = fit(&data, k, opts, None).unwrap();
            assert_eq!(ours.binary, keep.len() == 2);
            assert_eq!(ours.modelled, keep);
            assert_eq!(
                ours.iterations,
                case["n_iter"].as_u64().unwrap(),
                "{keep:?} C={c}"
            );
            let dist = coef_distance(&ours, case);
            assert!(dist < 1e-10, "{keep:?} C={c}: {dist}");
            let want: Vec<u32> = serde_json::from_value(case["predictions"].clone()).unwrap();
            let got: Vec<u32> = ours.topk(&data, 1).iter().map(|t| t[0]).collect();
            assert_eq!(got, want, "{keep:?} C={c}");
        }
        // One class is not a problem to fit.
        let one = all.select(
            &(0..all.len())
                .filter(|&i| all.y[i] == 1)
                .collect::<Vec<_>>(),
        );
        let e = fit(
            &one,
            k,
            FitOptions {
                c: 1.0,
                max_iter: 10,
                tol: 1e-4,
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("one class"), "{e}");
    }

    /// The CLIP paper's search on the seeded problem: the seven starting values, then
    /// halvings around the best down to an eighth of a decade; the choice is the best trial.
    #[test]
    fn c_search_halves_around_the_best_to_eighths_of_a_decade() {
        let (_, all) = seeded();
        let (tr, va) = split_validation(&all.y, 0.3);
        let (train, val) = (all.select(&tr), all.select(&va));
        let mut seen = Vec::new();
        let (c, trials) = search_c(&train, &val, 4, 1000, 1e-4, |t| seen.push(t.c)).unwrap();
        let e: Vec<i32> = trials
            .iter()
            .map(|t| (t.c.log10() * 8.0).round() as i32)
            .collect();
        assert_eq!(&e[..7], &[-48, -32, -16, 0, 16, 32, 48]);
        assert_eq!(seen.len(), trials.len());
        let top = trials.iter().map(|t| t.val_top1).fold(0.0, f64::max);
        let chosen = trials.iter().position(|t| t.c == c).unwrap();
        assert_eq!(trials[chosen].val_top1, top);
        // No smaller C ties the best.
        assert!(trials.iter().all(|t| t.val_top1 < top || t.c >= c));
        // Replayed: each halving tries the untried values `step` either side of the best so
        // far (ties to the smaller C).
        let mut n = 7;
        for step in [8, 4, 2, 1] {
            let b = (0..n)
                .rev()
                .max_by(|&i, &j| {
                    trials[i]
                        .val_top1
                        .total_cmp(&trials[j].val_top1)
                        .then(e[j].cmp(&e[i]))
                })
                .map(|i| e[i])
                .unwrap();
            let want: Vec<i32> = [b - step, b + step]
                .into_iter()
                .filter(|x| x.abs() <= 48 && !e[..n].contains(x))
                .collect();
            assert_eq!(&e[n..n + want.len()], &want[..], "step {step}: {e:?}");
            n += want.len();
        }
        assert_eq!(n, e.len());
    }

    #[test]
    fn validation_split_is_per_class_and_deterministic() {
        let labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2];
        let (tr, va) = split_validation(&labels, 0.25);
        assert_eq!(split_validation(&labels, 0.25), (tr.clone(), va.clone()));
        let count = |v: &[usize], c| v.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(&va, 0), count(&va, 1), count(&va, 2)), (1, 3, 0));
        assert_eq!(tr.len() + va.len(), labels.len());
    }

    #[test]
    fn fewshot_takes_k_per_class_by_seed() {
        let labels: Vec<usize> = (0..60).map(|i| i % 3).chain([3]).collect();
        let a = fewshot(&labels, 4, 0);
        assert_eq!(a, fewshot(&labels, 4, 0));
        for c in 0..3 {
            assert_eq!(a.iter().filter(|&&i| labels[i] == c).count(), 4);
        }
        // A class with fewer rows gives them all.
        assert_eq!(a.iter().filter(|&&i| labels[i] == 3).count(), 1);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(a, fewshot(&labels, 4, 1));
        assert_eq!(fewshot(&labels, 100, 7).len(), labels.len());
    }
}
