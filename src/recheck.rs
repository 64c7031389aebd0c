//! Zero-shot decisions of a reduced-precision run (bf16, amp, fp16) made in fp32 where they are
//! close: rounding moves a logit by about 1e-3 (cosine units), which flips every prediction
//! whose two best classes are nearer than that. The class vectors are computed in fp32 (once,
//! and cached as such); the run measures how far its image features move its logits on its
//! first images (both precisions), and any image whose top-1 decision, or whose label's top-5
//! membership, lies within that margin is scored again with fp32 image features on the
//! classes in reach. Everything else keeps the reduced-precision result.

use crate::loader::LoadedModel;
use crate::zeroshot::TopK;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// How far the measured error is stretched: the first images are a small part of what the run
/// scores (on 512 images of random full-size models the largest spread over all of them was
/// at most 1.07x the first 16 images').
const SAFETY: f32 = 1.5;

/// Images whose every row also runs in fp32 to measure the spread (whole batches, until at
/// least this many are measured).
const CALIBRATION_IMAGES: usize = 16;

/// The margin for `spread`: over the first images, the largest difference between two
/// classes' logit errors on one image (what moves a difference of two logits, so what flips a
/// decision); errors shared by every class cancel in it.
pub fn margin_for(spread: f32) -> f32 {
    SAFETY * spread
}

/// Which classes one image must be scored again on, given its reduced-precision `logits`:
/// None when its decisions stand. The top-1 decision is close when the best two classes are
/// within `margin`; with a `label`, its top-5 membership is close when it sits within
/// `margin` of the boundary between the fifth and sixth classes. The classes returned are all
/// those within `margin` of the decision's threshold (the top class, or the fifth), plus the
/// label: no class outside them can reach the top (or the label's rank) in fp32.
pub fn classes_in_reach(
    logits: &[f32],
    order: &[usize],
    label: Option<usize>,
    margin: f32,
) -> Option<Vec<usize>> {
    let c = logits.len();
    if c < 2 {
        return None;
    }
    let l = |r: usize| logits[order[r]];
    let top1 = l(0) - l(1) < margin;
    let top5 = match label {
        Some(y) if c > 5 => {
            let ly = logits[y];
            let inside = order[..5].contains(&y);
            if inside {
                ly - l(5) < margin
            } else {
                l(4) - ly < margin
            }
        }
        _ => false,
    };
    if !top1 && !top5 {
        return None;
    }
    let threshold = if top5 { l(4) } else { l(0) } - margin;
    let mut reach: Vec<usize> = order
        .iter()
        .copied()
        .take_while(|&k| logits[k] >= threshold)
        .collect();
    if let Some(y) = label.filter(|_| top5) {
        if !reach.contains(&y) {
            reach.push(y);
        }
    }
    Some(reach)
}

/// The final ranking of one image: the classes in `reach` by their fp32 `exact` scores, then
/// the rest in reduced-precision order; the first `k` with their scores.
pub fn rerank(
    logits: &[f32],
    order: &[usize],
    reach: &[usize],
    exact: &[f32],
    k: usize,
) -> (Vec<u32>, Vec<f32>) {
    let mut first: Vec<(usize, f32)> = reach.iter().copied().zip(exact.iter().copied()).collect();
    first.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let rest = order
        .iter()
        .filter(|c| !reach.contains(c))
        .map(|&c| (c, logits[c]));
    first
        .into_iter()
        .chain(rest)
        .take(k)
        .map(|(c, s)| (c as u32, s))
        .unzip()
}

/// Classes by descending score (ties: lower index first).
fn descending(logits: &[f32]) -> Vec<usize> {
    let mut o: Vec<usize> = (0..logits.len()).collect();
    o.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    o
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum::<f64>() as f32
}

/// The recheck of one dataset's run.
pub struct Recheck<'a> {
    exact: &'a LoadedModel,
    /// The class vectors `[C, D]` on the host, computed in fp32.
    classes: Vec<Vec<f32>>,
    /// The largest spread measured, and over how many images.
    spread: f32,
    measured: usize,
    /// Images scored again so far.
    pub images: u64,
}

impl<'a> Recheck<'a> {
    /// `exact`: the fp32 twin of the run's model; `classifier`: class vectors it computed.
    pub fn new(exact: &'a LoadedModel, classifier: &Tensor) -> candle_core::Result<Self> {
        let classes = classifier
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        Ok(Self {
            exact,
            classes,
            spread: 0.0,
            measured: 0,
            images: 0,
        })
    }

    /// The margin in use (cosine units), once the first batch has been measured.
    pub fn margin(&self) -> Option<f32> {
        (self.measured > 0).then(|| margin_for(self.spread))
    }

    fn exact_features(
        &self,
        pixels: &Tensor,
        rows: &[usize],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let idx = Tensor::new(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            pixels.device(),
        )?;
        let sub = pixels.index_select(&idx, 0)?;
        self.exact
            .model
            .encode_image_normalized(&sub)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()
    }

    /// Widens the margin to cover one batch: the run's `logits` against the fp32 scores of
    /// the same `pixels` on every class. Returns the batch's fp32 features.
    fn calibrate(
        &mut self,
        pixels: &Tensor,
        logits: &[Vec<f32>],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows: Vec<usize> = (0..logits.len()).collect();
        let exact = self.exact_features(pixels, &rows)?;
        for (l, x) in logits.iter().zip(&exact) {
            let (lo, hi) =
                self.classes
                    .iter()
                    .zip(l)
                    .fold((f32::MAX, f32::MIN), |(lo, hi), (t, &a)| {
                        let e = a - dot(x, t);
                        (lo.min(e), hi.max(e))
                    });
            self.spread = self.spread.max(hi - lo);
        }
        self.measured += logits.len();
        Ok(exact)
    }

    /// Top-`k` of a batch: `logits` are the run's scores against the class vectors
    /// ([`crate::zeroshot::logits`]), `pixels` the batch's input (for fp32 features where needed),
    /// `labels` each image's class when known.
    pub fn topk(
        &mut self,
        pixels: &Tensor,
        logits: &Tensor,
        labels: &[Option<usize>],
        k: usize,
    ) -> candle_core::Result<TopK> {
        let logits = logits
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        let calibrated = if self.measured < CALIBRATION_IMAGES {
            Some(self.calibrate(pixels, &logits)?)
        } else {
            None
        };
        let margin = margin_for(self.spread);
        let orders: Vec<Vec<usize>> = logits.iter().map(|l| descending(l)).collect();
        let reach: Vec<Option<Vec<usize>>> = logits
            .iter()
            .zip(&orders)
            .zip(labels)
            .map(|((l, o), y)| classes_in_reach(l, o, *y, margin))
            .collect();
        let rows: Vec<usize> = (0..reach.len()).filter(|&i| reach[i].is_some()).collect();
        let mut exact: HashMap<usize, Vec<f32>> = HashMap::new();
        if !rows.is_empty() {
            let feats = match calibrated {
                Some(mut f) => rows.iter().map(|&i| std::mem::take(&mut f[i])).collect(),
                None => self.exact_features(pixels, &rows)?,
            };
            exact.extend(rows.iter().copied().zip(feats));
            self.images += rows.len() as u64;
        }
        let mut idx = Vec::with_capacity(logits.len());
        let mut scores = Vec::with_capacity(logits.len());
        for (i, (l, o)) in logits.iter().zip(&orders).enumerate() {
            let (t, s) = match (&reach[i], exact.get(&i)) {
                (Some(r), Some(x)) => {
                    let e: Vec<f32> = r.iter().map(|&c| dot(x, &self.classes[c])).collect();
                    rerank(l, o, r, &e, k)
                }
                _ => rerank(l, o, &[], &[], k),
            };
            idx.push(t);
            scores.push(s);
        }
        Ok((idx, scores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_close_decisions_are_scored_again() {
        let l = [0.30f32, 0.2995, 0.10, 0.05, 0.04, 0.03, 0.02];
        let o = descending(&l);
        // The best two are 5e-4 apart: both are in reach, nothing else is.
        assert_eq!(classes_in_reach(&l, &o, None, 1e-3), Some(vec![0, 1]));
        assert_eq!(classes_in_reach(&l, &o, None, 1e-4), None);
        // A label at the fifth/sixth boundary (0.04 vs 0.03): the top-5 decision is close.
        let l = [0.30f32, 0.20, 0.10, 0.05, 0.0400, 0.0395, 0.02];
        let o = descending(&l);
        assert_eq!(classes_in_reach(&l, &o, Some(2), 1e-3), None);
        assert_eq!(
            classes_in_reach(&l, &o, Some(5), 1e-3),
            Some(vec![0, 1, 2, 3, 4, 5])
        );
        assert_eq!(
            classes_in_reach(&l, &o, Some(4), 1e-3),
            Some(vec![0, 1, 2, 3, 4, 5])
        );
        assert_eq!(classes_in_reach(&l, &o, Some(6), 1e-3), None);
    }

    #[test]
    fn fp32_scores_decide_within_reach() {
        let l = [0.30f32, 0.2995, 0.10, 0.05];
        let o = descending(&l);
        let reach = classes_in_reach(&l, &o, None, 1e-3).unwrap();
        // In fp32 class 1 is ahead: it becomes the prediction, the rest keep their order.
        let (t, s) = rerank(&l, &o, &reach, &[0.2990, 0.2992], 3);
        assert_eq!(t, vec![1, 0, 2]);
        assert_eq!(s, vec![0.2992, 0.2990, 0.10]);
        let (t, _) = rerank(&l, &o, &[], &[], 3);
        assert_eq!(t, vec![0, 1, 2]);
    }

    #[test]
    fn margin_stretches_the_spread() {
        assert!((margin_for(1e-3) - 1.5e-3).abs() < 1e-9);
    }
}
