//! open_clip_train's `val_generative_loss` for CoCa models: each row (an image and its
//! caption) through the captioning decoder with teacher forcing, each position predicting the
//! caption's next id, scored by cross-entropy over every position (padding included:
//! `F.cross_entropy` without `ignore_index`). Each row's mean is computed while the images
//! stream for their features (an image's tokens meet its rows' captions as its batch passes);
//! [`open_clip_loss`] then sums them as open_clip_train's `evaluate` does.

use crate::engine::Decoder;
use crate::features::{Encoded, Error, StreamOptions};
use crate::loader::LoadedModel;
use candle_core::Tensor;

/// Rows the decoder takes at once (its logits are `rows x (context - 1) x vocab`).
const ROWS_AT_ONCE: usize = 16;

/// The rows of a row-paired set: each row's image (its place in the streamed samples) and its
/// caption's `context_length` token ids.
pub struct CaptionRows<'a> {
    pub image: &'a [usize],
    pub ids: &'a [i64],
}

/// How often open_clip_train's `evaluate` logs, and adds a batch's generative loss.
pub const LOGGED_EVERY: usize = 100;

/// open_clip_train's `val_generative_loss` from each row's mean loss (`losses`, in its
/// loader's order) and the loader's batch sizes: its `evaluate` adds a batch's mean loss times
/// the batch's size inside its logging branch, so only every 100th batch from the first
/// counts, and divides by every row. (So the figure is those batches' rows' loss spread over all
/// rows: the same as the mean over all rows only when one batch holds them all. Reported as it
/// reports it; `generative_loss_all_rows` is the plain mean.)
pub fn open_clip_loss(losses: &[f32], batches: &[usize]) -> f64 {
    let (mut at, mut sum) = (0, 0f64);
    for (i, &b) in batches.iter().enumerate() {
        if i % LOGGED_EVERY == 0 {
            sum += losses[at..at + b].iter().map(|&v| v as f64).sum::<f64>();
        }
        at += b;
    }
    sum / losses.len().max(1) as f64
}

/// [`crate::features::stream_samples`] of `samples`, and each row's mean generative loss from
/// the same pass (each image encoded once, its features and its tokens together); NaN for a
/// row whose image was left out.
pub fn stream_with_loss(
    m: &LoadedModel,
    decoder: &Decoder,
    samples: Vec<crate::data::Sample>,
    opts: StreamOptions,
    rows: &CaptionRows,
    progress: impl FnMut(usize),
) -> Result<(Encoded, Vec<f32>), Error> {
    let ctx = m.config.context_length;
    if rows.ids.len() != rows.image.len() * ctx {
        return Err(candle_core::Error::Msg(format!(
            "{} caption ids for {} rows of {ctx}",
            rows.ids.len(),
            rows.image.len()
        ))
        .into());
    }
    let mut rows_of = vec![Vec::new(); samples.len()];
    for (r, &i) in rows.image.iter().enumerate() {
        if let Some(list) = rows_of.get_mut(i) {
            list.push(r);
        }
    }
    let mut losses = vec![f32::NAN; rows.image.len()];
    let enc = crate::features::stream_samples_with(m, samples, opts, progress, |px, at| {
        let (features, tokens) = m.model.encode_image_with_tokens(px)?;
        // (place in the batch, row) for every row of the batch's images.
        let pairs: Vec<(u32, usize)> = at
            .iter()
            .enumerate()
            .flat_map(|(j, &i)| rows_of[i].iter().map(move |&r| (j as u32, r)))
            .collect();
        for chunk in pairs.chunks(ROWS_AT_ONCE) {
            let k = chunk.len();
            let which: Vec<u32> = chunk.iter().map(|p| p.0).collect();
            let image = tokens.index_select(&Tensor::new(which, tokens.device())?, 0)?;
            let ids: Vec<i64> = chunk
                .iter()
                .flat_map(|p| rows.ids[p.1 * ctx..(p.1 + 1) * ctx].iter().copied())
                .collect();
            let ids = Tensor::from_vec(ids, (k, ctx), &m.device)?;
            let text = m.model.caption_tokens(&ids)?;
            let labels = ids.narrow(1, 1, ctx - 1)?;
            for (p, loss) in chunk
                .iter()
                .zip(decoder.row_losses(&image, &text, &labels)?)
            {
                losses[p.1] = loss;
            }
        }
        Ok(match opts.raw {
            true => features,
            false => crate::models::nn::l2_normalize(&features)?,
        })
    })?;
    Ok((enc, losses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_clips_loss_counts_every_hundredth_batch_over_all_rows() {
        // One batch: the mean.
        let l = [1.0f32, 2.0, 3.0, 6.0];
        assert_eq!(open_clip_loss(&l, &[4]), 3.0);
        // Batches of 3, 3, 2: only the first is added, then divided by 8 rows.
        let l: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        assert_eq!(open_clip_loss(&l, &[3, 3, 2]), 6.0 / 8.0);
        // 201 batches of one row: batches 0, 100 and 200.
        let l: Vec<f32> = (0..201).map(|v| v as f32).collect();
        assert_eq!(open_clip_loss(&l, &[1; 201]), 300.0 / 201.0);
    }
}
