//! CLIP_benchmark's linear probe (`clip_benchmark/metrics/linear_probe.py`): a `nn.Linear`
//! on L2-normalised image features, trained with AdamW (lr 0.1, cosine schedule without warm-up,
//! 10 epochs, batches of 64 reshuffled each epoch), its weight decay picked on a validation set
//! over `np.logspace(-6, 2, 97)` by CLIP_benchmark's coarse-to-fine search. The random draws
//! are torch's ([`crate::torch_rng`]): the training order, the few-shot pick, the layer's
//! initial weights and each epoch's shuffle are CLIP_benchmark's for the same seed; the
//! arithmetic is f32 as its CPU run computes it (matrix products in another summation order).

use crate::native::gemm::{self, Epilogue, GemmConfig, PackedB};
use crate::probe::Dataset;
use crate::torch_rng::Generator;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Training data the procedure cannot take (no images, a few-shot class short of K, a
    /// validation class the layer lacks).
    #[error("{0}")]
    Data(String),
    /// `--fewshot-k k` with classes of fewer training images (class, count), where
    /// CLIP_benchmark gives no result.
    #[error("--fewshot-k {k}: too few training images ({}); CLIP_benchmark gives no result then", .short.iter().map(|(c, n)| format!("class {c} has {n}")).collect::<Vec<_>>().join(", "))]
    FewShot {
        k: usize,
        short: Vec<(usize, usize)>,
    },
}

/// CLIP_benchmark's settings (`--fewshot_lr`, `--fewshot_epochs`, `--batch_size`, `--seed`,
/// `--fewshot_k`).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub lr: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Images per class to train on; None: all.
    pub fewshot_k: Option<usize>,
    /// The decay without a validation set (CLIP_benchmark's 0).
    pub weight_decay: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lr: 0.1,
            epochs: 10,
            batch_size: 64,
            seed: 0,
            fewshot_k: None,
            weight_decay: 0.0,
        }
    }
}

/// `F.normalize(x, dim=-1)` of each row, in f32 (what CLIP_benchmark's Featurizer stores).
pub fn normalize_rows(data: &mut Dataset) {
    let d = data.dim.max(1);
    for row in data.x.chunks_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// A trained `nn.Linear(dim, classes)`: `weight [classes, dim]`, `bias [classes]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub dim: usize,
    pub classes: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Linear {
    /// `nn.Linear`'s initialisation from `g`: weights then bias, each uniform in
    /// `±1/sqrt(dim)` (`kaiming_uniform_(a=sqrt(5))`, computed as torch computes the bound).
    pub fn init(dim: usize, classes: usize, g: &mut Generator) -> Self {
        let a = 5f64.sqrt();
        let gain = (2.0 / (1.0 + a.powf(2.0))).sqrt();
        let bound = 3f64.sqrt() * (gain / (dim as f64).sqrt());
        let weight = (0..classes * dim)
            .map(|_| g.uniform_f32(-bound as f32, bound as f32))
            .collect();
        let b = 1.0 / (dim as f64).sqrt();
        let bias = (0..classes)
            .map(|_| g.uniform_f32(-b as f32, b as f32))
            .collect();
        Self {
            dim,
            classes,
            weight,
            bias,
        }
    }

    fn packed(&self) -> PackedB {
        PackedB::from_linear_weight(GemmConfig::detected(), &self.weight, self.classes, self.dim)
    }

    /// Logits `[n, classes]` of `x` (`n` rows of `dim`).
    fn forward(&self, packed: &PackedB, x: &[f32], n: usize, parallel: bool) -> Vec<f32> {
        gemm::gemm_new(
            n,
            x,
            self.dim,
            packed,
            0..self.classes,
            &Epilogue::bias(Some(&self.bias), gemm::Act::None),
            parallel,
        )
    }

    /// The logits of every row of `data`, row-major `[n, classes]`.
    pub fn logits(&self, data: &Dataset) -> Vec<f32> {
        self.forward(&self.packed(), &data.x, data.len(), true)
    }

    /// Per row, the `k` best classes, best first (ties: the lower class first).
    pub fn topk(&self, data: &Dataset, k: usize) -> Vec<Vec<u32>> {
        let scores: Vec<f64> = self.logits(data).into_iter().map(f64::from).collect();
        crate::probe::topk_rows(&scores, self.classes, k)
    }
}

/// The scalars of one torch `AdamW` step (betas 0.9, 0.999; eps 1e-8), rounded to f32 where
/// torch hands them to an f32 kernel.
#[derive(Clone, Copy)]
struct AdamStep {
    decay: Option<f32>,
    w1: f32,
    b2: f32,
    w2: f32,
    bc2_sqrt: f32,
    step_size: f32,
}

impl AdamStep {
    /// Step `step` (counting from 1) at learning rate `lr`.
    fn new(lr: f64, weight_decay: f64, step: u32) -> Self {
        const BETA1: f64 = 0.9;
        const BETA2: f64 = 0.999;
        let bc1 = 1.0 - BETA1.powf(step as f64);
        Self {
            decay: (weight_decay != 0.0).then_some((1.0 - lr * weight_decay) as f32),
            w1: (1.0 - BETA1) as f32,
            b2: BETA2 as f32,
            w2: (1.0 - BETA2) as f32,
            bc2_sqrt: ((1.0 - BETA2.powf(step as f64)).sqrt()) as f32,
            step_size: (-(lr / bc1)) as f32,
        }
    }

    /// torch's single-tensor AdamW on `p` with gradient `g` and moments `m`, `v`: decoupled
    /// decay, then the moments (`lerp_`, `mul_().addcmul_()`), then the bias-corrected update
    /// (`addcdiv_`).
    fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        const EPS: f32 = 1e-8;
        if let Some(decay) = self.decay {
            p.iter_mut().for_each(|x| *x *= decay);
        }
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
            *m += self.w1 * (g - *m);
            *v = *v * self.b2 + self.w2 * g * g;
            let denom = v.sqrt() / self.bc2_sqrt + EPS;
            *p += self.step_size * *m / denom;
        }
    }
}

/// A step's multiply-adds from which its halves run on two threads.
const PARALLEL_MACS: usize = 8 << 20;

/// CLIP_benchmark's `train`: `torch.manual_seed(seed)`, a fresh `nn.Linear`, then `epochs`
/// passes of a shuffling DataLoader (each epoch draws the loader's base seed and its sampler's
/// seed from the generator; the sampler's `randperm` gives the order) with a cosine learning
/// rate per step and mean cross-entropy. Each step's two products run in two halves, one per
/// thread (batch rows forward; classes backward, with their update).
pub fn train(data: &Dataset, classes: usize, weight_decay: f64, o: &Options) -> Linear {
    let (n, d) = (data.len(), data.dim);
    let mut g = Generator::new(o.seed);
    let mut lin = Linear::init(d, classes, &mut g);
    let (mut m_w, mut v_w) = (vec![0f32; classes * d], vec![0f32; classes * d]);
    let (mut m_b, mut v_b) = (vec![0f32; classes], vec![0f32; classes]);
    let bs = o.batch_size.max(1);
    let per_epoch = n.div_ceil(bs);
    let steps = (o.epochs * per_epoch) as f64;
    let cfg = GemmConfig::detected();
    let (mut packed_w, mut packed_x) = (PackedB::empty(cfg), PackedB::empty(cfg));
    let mut xb = Vec::with_capacity(bs * d);
    let mut logits = vec![0f32; bs * classes];
    let mut grad_t = vec![0f32; classes * bs];
    let mut grad_w = vec![0f32; classes * d];
    let mut grad_b = vec![0f32; classes];
    let hc = classes.div_ceil(2);
    // Two threads only pay where a step's products are large: waking a rayon worker costs
    // more than the halves of 64 x 512 x 100 save (measured: 3.0 s on two threads, 2.7 s on
    // one, for 10 epochs of 50,000 rows).
    let parallel = bs * d * classes >= PARALLEL_MACS && rayon::current_num_threads() > 1;
    let join = |a: &mut (dyn FnMut() + Send), b: &mut (dyn FnMut() + Send)| {
        if parallel {
            rayon::join(a, b);
        } else {
            a();
            b();
        }
    };
    let mut t = 0u32;
    for epoch in 0..o.epochs {
        let _loader_base_seed = g.random_i64();
        let order = Generator::new(g.random_i64()).randperm(n);
        for (i, batch) in order.chunks(bs).enumerate() {
            let step = (i + epoch * per_epoch) as f64;
            let lr = 0.5 * (1.0 + (std::f64::consts::PI * step / steps).cos()) * o.lr;
            let b = batch.len();
            xb.clear();
            for &r in batch {
                xb.extend_from_slice(&data.x[r * d..(r + 1) * d]);
            }
            packed_w.repack(&lin.weight, d, classes, 1, d);
            let epi = Epilogue::bias(Some(&lin.bias), gemm::Act::None);
            let hb = b.div_ceil(2);
            let (top, bottom) = logits[..b * classes].split_at_mut(hb * classes);
            let pw = &packed_w;
            join(
                &mut || gemm::gemm(hb, &xb, d, pw, 0..classes, top, classes, &epi, false),
                &mut || {
                    let x2 = &xb[hb * d..];
                    gemm::gemm(b - hb, x2, d, pw, 0..classes, bottom, classes, &epi, false)
                },
            );
            // d(mean CE)/d logits = (softmax - onehot) / b, transposed: [classes, b].
            let inv = 1.0 / b as f32;
            for (j, row) in logits[..b * classes].chunks(classes).enumerate() {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
                let lse = max + sum.ln();
                let y = data.y[batch[j]];
                for (c, v) in row.iter().enumerate() {
                    let gv = (v - lse).exp() * inv;
                    grad_t[c * b + j] = if c == y { gv - inv } else { gv };
                }
            }
            packed_x.repack(&xb, b, d, d, 1);
            t += 1;
            let adam = AdamStep::new(lr, weight_decay, t);
            let px = &packed_x;
            let gt = &grad_t[..classes * b];
            // Weight gradient and update by halves of the classes (rows of W).
            let (w1, w2) = lin.weight.split_at_mut(hc * d);
            let (g1, g2) = grad_w.split_at_mut(hc * d);
            let (m1, m2) = m_w.split_at_mut(hc * d);
            let (v1, v2) = v_w.split_at_mut(hc * d);
            join(
                &mut || {
                    gemm::gemm(hc, gt, b, px, 0..d, g1, d, &Epilogue::NONE, false);
                    adam.apply(w1, g1, m1, v1);
                },
                &mut || {
                    let rest = classes - hc;
                    gemm::gemm(
                        rest,
                        &gt[hc * b..],
                        b,
                        px,
                        0..d,
                        g2,
                        d,
                        &Epilogue::NONE,
                        false,
                    );
                    adam.apply(w2, g2, m2, v2);
                },
            );
            for (gb, r) in grad_b.iter_mut().zip(gt.chunks(b)) {
                *gb = r.iter().sum();
            }
            adam.apply(&mut lin.bias, &grad_b, &mut m_b, &mut v_b);
        }
    }
    lin
}

/// `np.logspace(-6, 2, num)` as NumPy computes it (`linspace`'s `i * step + start`, the last
/// point set to the stop, then `10 ** y`).
pub fn logspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    (0..num)
        .map(|i| {
            let y = if i == num - 1 {
                stop
            } else {
                i as f64 * step + start
            };
            10f64.powf(y)
        })
        .collect()
}

/// One weight decay tried on the validation set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    pub weight_decay: f64,
    pub val_acc1: f64,
}

/// What [`evaluate`] trained.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub model: Linear,
    pub weight_decay: f64,
    /// The search's trainings in CLIP_benchmark's order (a weight decay it tries again is
    /// listed again; it is trained once).
    pub trials: Vec<Trial>,
    /// Positions in the training set of the rows trained on (before the validation rows), in
    /// the order trained on.
    pub train_rows: Vec<usize>,
    /// Rows of the final training (with the validation rows when they were added).
    pub num_trained: usize,
}

/// CLIP_benchmark's `evaluate` after feature extraction: the training rows in the order of
/// `torch.randperm` (with `seed`, as a fresh process draws it), the few-shot pick (the first
/// `k` of each class in that order; a class with fewer is an error, where CLIP_benchmark
/// returns no result), then with `val` the weight-decay search (7 points of the 97, then
/// spans 8, 4, 2, 1 around the best; the first best wins) and a final training on train +
/// val (few-shot: train only) with the chosen decay; without `val`, `o.weight_decay` on train.
/// `train` and `val` hold normalised features; `classes` is the training labels' maximum + 1.
pub fn evaluate(train: &Dataset, val: Option<&Dataset>, o: &Options) -> Result<Outcome, Error> {
    if train.is_empty() {
        return Err(Error::Data("no training images".into()));
    }
    let classes = train.y.iter().max().map_or(0, |&m| m + 1);
    let perm = Generator::new(o.seed).randperm(train.len());
    let mut counts = std::collections::BTreeMap::<usize, usize>::new();
    let mut rows = Vec::new();
    for p in perm {
        let c = counts.entry(train.y[p]).or_default();
        if o.fewshot_k.is_none_or(|k| *c < k) {
            *c += 1;
            rows.push(p);
        }
    }
    if let Some(k) = o.fewshot_k {
        let short: Vec<(usize, usize)> = counts.into_iter().filter(|&(_, n)| n != k).collect();
        if !short.is_empty() {
            return Err(Error::FewShot { k, short });
        }
    }
    let picked = train.select(&rows);
    let Some(val) = val else {
        let model = train_checked(&picked, classes, o.weight_decay, o)?;
        return Ok(Outcome {
            model,
            weight_decay: o.weight_decay,
            trials: Vec::new(),
            num_trained: picked.len(),
            train_rows: rows,
        });
    };
    let grid = logspace(-6.0, 2.0, 97);
    let coarse = logspace(-6.0, 2.0, 7);
    // CLIP_benchmark finds the coarse points in the fine grid by float equality.
    let start: Vec<usize> = (0..grid.len())
        .filter(|&i| coarse.contains(&grid[i]))
        .collect();
    let mut trials = Vec::new();
    let mut scored = std::collections::HashMap::<usize, f64>::new();
    // Each decay's training is independent and seeded alike, so the new points of a round are
    // trained side by side (one per thread); the choice reads them in CLIP_benchmark's order.
    let mut find_peak = |idxs: &[usize], trials: &mut Vec<Trial>| -> Result<usize, Error> {
        use rayon::prelude::*;
        let mut new: Vec<usize> = idxs
            .iter()
            .copied()
            .filter(|i| !scored.contains_key(i))
            .collect();
        new.dedup();
        let accs = new
            .par_iter()
            .map(|&i| {
                let m = train_checked(&picked, classes, grid[i], o)?;
                let hits = m
                    .topk(val, 1)
                    .iter()
                    .zip(&val.y)
                    .filter(|(t, &y)| t[0] as usize == y)
                    .count();
                Ok(hits as f64 / val.len().max(1) as f64)
            })
            .collect::<Result<Vec<f64>, Error>>()?;
        scored.extend(new.into_iter().zip(accs));
        let (mut best, mut max_acc) = (0usize, 0f64);
        for &i in idxs {
            let acc = scored[&i];
            trials.push(Trial {
                weight_decay: grid[i],
                val_acc1: acc,
            });
            if max_acc < acc {
                (best, max_acc) = (i, acc);
            }
        }
        Ok(best)
    };
    let mut peak = find_peak(&start, &mut trials)?;
    let mut span = 8usize;
    while span > 0 {
        let (left, right) = (peak.saturating_sub(span), (peak + span).min(grid.len() - 1));
        peak = find_peak(&[left, peak, right], &mut trials)?;
        span /= 2;
    }
    let wd = grid[peak];
    let last = if o.fewshot_k.is_none() {
        picked.concat(val)
    } else {
        picked
    };
    let model = train_checked(&last, classes, wd, o)?;
    Ok(Outcome {
        model,
        weight_decay: wd,
        trials,
        num_trained: last.len(),
        train_rows: rows,
    })
}

/// [`train`], refusing labels outside the layer (a validation class the training set lacks).
fn train_checked(data: &Dataset, classes: usize, wd: f64, o: &Options) -> Result<Linear, Error> {
    if let Some(&y) = data.y.iter().find(|&&y| y >= classes) {
        return Err(Error::Data(format!(
            "a validation image is of class {y}, which no training image has (the layer has {classes} outputs)"
        )));
    }
    Ok(train(data, classes, wd, o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpys_logspace_points() {
        let g = logspace(-6.0, 2.0, 97);
        assert_eq!(g.len(), 97);
        assert_eq!((g[0], g[96]), (1e-6, 100.0));
        let coarse = logspace(-6.0, 2.0, 7);
        let at: Vec<usize> = (0..97).filter(|&i| coarse.contains(&g[i])).collect();
        // NumPy finds all seven (checked with numpy 2.x).
        assert_eq!(at, vec![0, 16, 32, 48, 64, 80, 96]);
    }

    #[test]
    fn a_separable_problem_is_learnt() {
        // Two classes on either side of x0 = 0.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..40 {
            let s = if i % 2 == 0 { 1.0 } else { -1.0 };
            x.extend_from_slice(&[s * (1.0 + (i % 7) as f32 / 7.0), (i % 5) as f32 - 2.0]);
            y.push(i % 2);
        }
        let mut data = Dataset::new(x, y, 2);
        normalize_rows(&mut data);
        let o = Options {
            epochs: 20,
            batch_size: 8,
            ..Default::default()
        };
        let m = train(&data, 2, 0.0, &o);
        let top = m.topk(&data, 1);
        let hits = top
            .iter()
            .zip(&data.y)
            .filter(|(t, &y)| t[0] as usize == y)
            .count();
        assert_eq!(hits, 40);
        // Deterministic: the same seed gives the same weights.
        assert_eq!(train(&data, 2, 0.0, &o).weight, m.weight);
    }
}
