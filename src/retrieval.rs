//! Zero-shot image-text retrieval, the CLIP protocol as CLIP_benchmark computes it: scores are
//! the dot products of L2-normalised caption and image features; text->image ("image
//! retrieval") asks, per caption, whether its image is among the top k images; image->text
//! ("text retrieval"), per image, whether any of its captions is among the top k captions.
//! Each query's rank of its first correct item is counted (1 + the items that score strictly
//! higher), so no row is sorted and memory holds one block of scores at a time.

use candle_core::{DType, Tensor};

/// Per query, the rank (1-based) of its first correct item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranks {
    /// One per caption: where its image lands among all images.
    pub text_to_image: Vec<u32>,
    /// One per image: where its best caption lands among all captions.
    pub image_to_text: Vec<u32>,
}

/// `(N, M)` of `images [N, D]` and `captions [M, D]`, checked against each caption's image.
fn sizes(
    images: &Tensor,
    captions: &Tensor,
    image_of: &[usize],
) -> candle_core::Result<(usize, usize)> {
    let (n, _) = images.dims2()?;
    let (m, _) = captions.dims2()?;
    if image_of.len() != m || image_of.iter().any(|&i| i >= n) {
        candle_core::bail!("the captions' images do not match the {m} captions and {n} images");
    }
    Ok((n, m))
}

/// Ranks for `images [N, D]` and `captions [M, D]` (L2-normalised), `caption_image[c]` the image
/// of caption `c`. Scores are computed `block` captions at a time as `captions @ images^T`
/// (CLIP_benchmark's matrix); both directions read the same blocks, so they see the same values.
pub fn ranks(
    images: &Tensor,
    captions: &Tensor,
    caption_image: &[usize],
    block: usize,
) -> candle_core::Result<Ranks> {
    let (n, m) = sizes(images, captions, caption_image)?;
    let images_t = images.to_dtype(DType::F32)?.t()?.contiguous()?;
    let captions = captions.to_dtype(DType::F32)?;
    let block = block.max(1);
    let scores_of = |start: usize| -> candle_core::Result<Vec<Vec<f32>>> {
        let len = block.min(m - start);
        captions.narrow(0, start, len)?.matmul(&images_t)?.to_vec2()
    };
    // Pass 1: text->image ranks, and each image's best caption score.
    let mut t2i = Vec::with_capacity(m);
    let mut best = vec![f32::NEG_INFINITY; n];
    let mut start = 0;
    while start < m {
        for (r, row) in scores_of(start)?.iter().enumerate() {
            let img = caption_image[start + r];
            let pos = row[img];
            t2i.push(1 + row.iter().filter(|&&s| s > pos).count() as u32);
            best[img] = best[img].max(pos);
        }
        start += block;
    }
    // Pass 2: per image, the captions that score above its best one.
    let mut above = vec![0u32; n];
    let mut start = 0;
    while start < m {
        for row in scores_of(start)? {
            for (i, &s) in row.iter().enumerate() {
                above[i] += (s > best[i]) as u32;
            }
        }
        start += block;
    }
    Ok(Ranks {
        text_to_image: t2i,
        image_to_text: above.into_iter().map(|a| a + 1).collect(),
    })
}

/// The share of queries whose rank is at most `k`.
pub fn recall(ranks: &[u32], k: usize) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().filter(|&&r| r as usize <= k).count() as f64 / ranks.len() as f64
}

/// The median rank (the mean of the middle two for an even count, as numpy's).
pub fn median_rank(ranks: &[u32]) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    let mut v = ranks.to_vec();
    v.sort_unstable();
    let h = v.len() / 2;
    if v.len() % 2 == 1 {
        v[h] as f64
    } else {
        (v[h - 1] as f64 + v[h] as f64) / 2.0
    }
}

pub fn mean_rank(ranks: &[u32]) -> f64 {
    if ranks.is_empty() {
        return 0.0;
    }
    ranks.iter().map(|&r| r as f64).sum::<f64>() / ranks.len() as f64
}

/// CLIP_benchmark's metric names (`image_retrieval_recall@K`: text->image,
/// `text_retrieval_recall@K`: image->text, fractions), plus median and mean ranks.
pub fn metrics(r: &Ranks, ks: &[usize]) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for &k in ks {
        m.insert(
            format!("image_retrieval_recall@{k}"),
            recall(&r.text_to_image, k).into(),
        );
        m.insert(
            format!("text_retrieval_recall@{k}"),
            recall(&r.image_to_text, k).into(),
        );
    }
    for (name, v) in [("image", &r.text_to_image), ("text", &r.image_to_text)] {
        m.insert(
            format!("{name}_retrieval_median_rank"),
            median_rank(v).into(),
        );
        m.insert(format!("{name}_retrieval_mean_rank"), mean_rank(v).into());
    }
    m
}

/// open_clip's validation metrics, where row `r` of the file pairs one image with one caption
/// and only that caption (only that image) is right for it: `get_clip_metrics` and
/// `clip_val_loss` of its training script's `evaluate`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowPaired {
    /// Per row, where its caption lands among all rows' captions, scored against its image.
    pub image_to_text: Vec<u32>,
    /// Per row, where its image lands among all rows' images, scored against its caption.
    pub text_to_image: Vec<u32>,
    /// The contrastive loss averaged over the rows, batch by batch.
    pub loss: f64,
}

/// open_clip's default `--workers`: its dataloader workers per device.
pub const OPEN_CLIP_WORKERS: usize = 4;

/// The order open_clip's validation loader gives the rows in, and its batches' lengths.
/// `rows[r]` is row `r`'s (stream, place): a stream is one dataloader worker's share (the
/// webdataset shards `split_by_worker` deals it; a CSV is read as one stream), in `place`
/// order, gaps allowed. Each worker batches its own rows `batch` at a time, the last batch
/// partial, and the loader takes a batch from each worker in turn, passing those that are done.
pub fn loader_order(rows: &[(usize, usize)], batch: usize) -> (Vec<usize>, Vec<usize>) {
    let batch = batch.max(1);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&r| rows[r]);
    // (the worker's batch, the worker, place among the worker's rows present)
    let mut key = vec![(0, 0, 0); rows.len()];
    let mut k = 0;
    for (j, &r) in order.iter().enumerate() {
        if j > 0 && rows[order[j - 1]].0 != rows[r].0 {
            k = 0;
        }
        key[r] = (k / batch, rows[r].0, k);
        k += 1;
    }
    order.sort_by_key(|&r| key[r]);
    let mut lens: Vec<usize> = Vec::new();
    for (j, &r) in order.iter().enumerate() {
        let (b, w, _) = key[r];
        if j == 0 || key[order[j - 1]].0 != b || key[order[j - 1]].1 != w {
            lens.push(0);
        }
        *lens.last_mut().expect("pushed") += 1;
    }
    (order, lens)
}

/// [`RowPaired`] for `images [N, D]` (each distinct image once) and `captions [M, D]` (row
/// order), `row_image[r]` the image of row `r`; all L2-normalised. The logits are
/// `logit_scale * image . caption` in f32, as open_clip scales its product. A row's rank counts
/// the rows scoring higher, and those scoring the same that come before it: a stable
/// descending sort's order, which `torch.argsort` gives on CUDA beyond 32 values and on the
/// CPU up to 16 (elsewhere its order among exact ties, such as one image on several rows, is
/// its unstable sort's). The loss is computed over consecutive batches of `batches[k]` rows
/// (see [`loader_order`]). `block` captions are scored at a time.
pub fn row_paired(
    images: &Tensor,
    captions: &Tensor,
    row_image: &[usize],
    logit_scale: f32,
    batches: &[usize],
    block: usize,
) -> candle_core::Result<RowPaired> {
    let (n, m) = sizes(images, captions, row_image)?;
    if batches.iter().sum::<usize>() != m || batches.contains(&0) {
        candle_core::bail!("batches of {batches:?} rows do not split {m} rows");
    }
    let images = images.to_dtype(DType::F32)?;
    let images_t = images.t()?.contiguous()?;
    let captions = captions.to_dtype(DType::F32)?;
    let block = block.max(1);
    // Row b's caption against every distinct image, scaled.
    let logits_of = |start: usize| -> candle_core::Result<Vec<Vec<f32>>> {
        let len = block.min(m - start);
        let rows = captions
            .narrow(0, start, len)?
            .matmul(&images_t)?
            .to_vec2()?;
        Ok(rows
            .into_iter()
            .map(|r: Vec<f32>| r.into_iter().map(|v| logit_scale * v).collect())
            .collect())
    };
    // Each image's rows, ascending; image i's are places off[i]..off[i + 1] of a flat list.
    let mut rows_of = vec![Vec::new(); n];
    for (r, &i) in row_image.iter().enumerate() {
        rows_of[i].push(r);
    }
    let mut off = vec![0usize; n + 1];
    for i in 0..n {
        off[i + 1] = off[i] + rows_of[i].len();
    }
    // Pass 1: text->image, and each row's own logit (the same value both ways).
    let mut t2i = Vec::with_capacity(m);
    let mut own = Vec::with_capacity(m);
    let mut start = 0;
    while start < m {
        for (k, row) in logits_of(start)?.iter().enumerate() {
            let b = start + k;
            let mine = row[row_image[b]];
            let mut before = 0u32;
            for (i, (&v, w)) in row.iter().zip(off.windows(2)).enumerate() {
                if v > mine {
                    before += (w[1] - w[0]) as u32;
                } else if v == mine {
                    before += rows_of[i].partition_point(|&a| a < b) as u32;
                }
            }
            t2i.push(1 + before);
            own.push(mine);
        }
        start += block;
    }
    // Pass 2: image->text, row a's image against every row's caption. Per image, its rows'
    // own logits sorted: a caption scoring v is above every row whose own logit is below v,
    // so one search per (caption, image) and a count at where v falls, summed at the end
    // (rather than one comparison per (caption, row)).
    let mut sorted: Vec<(f32, usize)> = Vec::with_capacity(m);
    for rows in &rows_of {
        let from = sorted.len();
        sorted.extend(rows.iter().map(|&a| (own[a], a)));
        sorted[from..].sort_by(|x, y| x.0.total_cmp(&y.0));
    }
    // falls[off[i] + i + p]: captions whose logit against image i is above the image's p lowest
    // own logits and no others.
    let mut falls = vec![0u32; m + n];
    let mut level = vec![0u32; m];
    let mut start = 0;
    while start < m {
        for (k, row) in logits_of(start)?.iter().enumerate() {
            let b = start + k;
            for (i, &v) in row.iter().enumerate() {
                let seg = &sorted[off[i]..off[i + 1]];
                let below = seg.partition_point(|&(o, _)| o < v);
                falls[off[i] + i + below] += 1;
                // Exact ties count for the rows after b.
                for &(o, a) in &seg[below..] {
                    if o != v {
                        break;
                    }
                    level[a] += (b < a) as u32;
                }
            }
        }
        start += block;
    }
    let mut i2t = vec![0u32; m];
    for i in 0..n {
        let seg = &sorted[off[i]..off[i + 1]];
        let counts = &falls[off[i] + i..off[i + 1] + i + 1];
        // The row at sorted place j is below the captions counted at places j+1 and up.
        let mut above = 0u32;
        for j in (0..seg.len()).rev() {
            above += counts[j + 1];
            let a = seg[j].1;
            i2t[a] = 1 + above + level[a];
        }
    }
    // The loss, batch by batch as open_clip's validation loader gives the rows.
    let mut total = 0.0f64;
    let mut start = 0;
    for &len in batches {
        let idx: Vec<u32> = row_image[start..start + len]
            .iter()
            .map(|&i| i as u32)
            .collect();
        let img = images.index_select(&Tensor::new(idx, images.device())?, 0)?;
        let logits: Vec<Vec<f32>> = img
            .matmul(&captions.narrow(0, start, len)?.t()?)?
            .to_vec2()?;
        let logits: Vec<Vec<f64>> = logits
            .into_iter()
            .map(|r| r.into_iter().map(|v| (logit_scale * v) as f64).collect())
            .collect();
        let cross_entropy = |at: &dyn Fn(usize, usize) -> f64| {
            (0..len)
                .map(|q| {
                    let mx = (0..len).map(|j| at(q, j)).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..len).map(|j| (at(q, j) - mx).exp()).sum();
                    mx + sum.ln() - at(q, q)
                })
                .sum::<f64>()
                / len as f64
        };
        let per_image = cross_entropy(&|q, j| logits[q][j]);
        let per_text = cross_entropy(&|q, j| logits[j][q]);
        total += (per_image + per_text) / 2.0 * len as f64;
        start += len;
    }
    Ok(RowPaired {
        image_to_text: i2t,
        text_to_image: t2i,
        loss: total / m as f64,
    })
}

/// open_clip's names for [`RowPaired`]: `image_to_text_mean_rank`, `..._median_rank` (numpy's
/// median of the 0-based ranks, rounded down, plus one), `..._R@K` (fractions), the same for
/// `text_to_image`, `clip_val_loss` and `num_samples`.
pub fn row_metrics(r: &RowPaired, ks: &[usize]) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (name, v) in [
        ("image_to_text", &r.image_to_text),
        ("text_to_image", &r.text_to_image),
    ] {
        m.insert(format!("{name}_mean_rank"), mean_rank(v).into());
        let zero_based: Vec<u32> = v.iter().map(|&x| x - 1).collect();
        m.insert(
            format!("{name}_median_rank"),
            (median_rank(&zero_based).floor() + 1.0).into(),
        );
        for &k in ks {
            m.insert(format!("{name}_R@{k}"), recall(v, k).into());
        }
    }
    m.insert("clip_val_loss".into(), r.loss.into());
    m.insert("num_samples".into(), r.image_to_text.len().into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Ranks by sorting whole rows (the obvious way), to check the counting.
    fn by_sorting(scores: &[Vec<f32>], caption_image: &[usize], n: usize) -> Ranks {
        let rank_in = |row: &[f32], good: &dyn Fn(usize) -> bool| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            1 + idx.iter().position(|&j| good(j)).unwrap() as u32
        };
        let t2i = scores
            .iter()
            .zip(caption_image)
            .map(|(row, &img)| rank_in(row, &|j| j == img))
            .collect();
        let i2t = (0..n)
            .map(|i| {
                let col: Vec<f32> = scores.iter().map(|r| r[i]).collect();
                rank_in(&col, &|c| caption_image[c] == i)
            })
            .collect();
        Ranks {
            text_to_image: t2i,
            image_to_text: i2t,
        }
    }

    /// Values in [-0.5, 0.5) from a seeded linear congruential generator.
    fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        }
    }

    #[test]
    fn counted_ranks_equal_sorted_ranks_in_any_block_size() {
        let (n, m, d) = (7, 19, 5);
        let mut rnd = uniform(1);
        let img: Vec<f32> = (0..n * d).map(|_| rnd()).collect();
        let cap: Vec<f32> = (0..m * d).map(|_| rnd()).collect();
        let caption_image: Vec<usize> = (0..m).map(|c| (c * 3) % n).collect();
        let images = Tensor::from_vec(img, (n, d), &Device::Cpu).unwrap();
        let captions = Tensor::from_vec(cap, (m, d), &Device::Cpu).unwrap();
        let scores: Vec<Vec<f32>> = captions
            .matmul(&images.t().unwrap())
            .unwrap()
            .to_vec2()
            .unwrap();
        let want = by_sorting(&scores, &caption_image, n);
        for block in [1, 4, 19, 64] {
            assert_eq!(
                ranks(&images, &captions, &caption_image, block).unwrap(),
                want
            );
        }
        let r = &want.text_to_image;
        assert_eq!(
            recall(r, 1),
            r.iter().filter(|&&x| x == 1).count() as f64 / m as f64
        );
        assert_eq!(recall(r, n), 1.0);
        assert_eq!(median_rank(&[3, 1, 2, 10]), 2.5);
        assert_eq!(median_rank(&[3, 1, 2]), 2.0);
        assert_eq!(mean_rank(&[1, 2, 6]), 3.0);
    }

    /// open_clip's computation spelled out: the full row-by-row logit matrix (one image per
    /// row, repeated images repeated), a stable descending sort per row, cross entropy per
    /// batch.
    fn open_clip_way(
        img: &[Vec<f32>],
        cap: &[Vec<f32>],
        row_image: &[usize],
        scale: f32,
        batches: &[usize],
    ) -> (Vec<u32>, Vec<u32>, f64) {
        let m = row_image.len();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let logits: Vec<Vec<f32>> = (0..m)
            .map(|a| {
                (0..m)
                    .map(|b| scale * dot(&img[row_image[a]], &cap[b]))
                    .collect()
            })
            .collect();
        let rank = |row: &dyn Fn(usize) -> f32, want: usize| {
            let mut idx: Vec<usize> = (0..m).collect();
            idx.sort_by(|&x, &y| row(y).total_cmp(&row(x)));
            1 + idx.iter().position(|&j| j == want).unwrap() as u32
        };
        let i2t = (0..m).map(|a| rank(&|b| logits[a][b], a)).collect();
        let t2i = (0..m).map(|b| rank(&|a| logits[a][b], b)).collect();
        let mut total = 0.0;
        let mut start = 0;
        for &len in batches {
            let r: Vec<usize> = (start..start + len).collect();
            start += len;
            let ce = |f: &dyn Fn(usize, usize) -> f64| {
                r.iter()
                    .map(|&q| {
                        let z: f64 = r.iter().map(|&j| f(q, j).exp()).sum();
                        z.ln() - f(q, q)
                    })
                    .sum::<f64>()
                    / r.len() as f64
            };
            let li = ce(&|q, j| logits[q][j] as f64);
            let lt = ce(&|q, j| logits[j][q] as f64);
            total += (li + lt) / 2.0 * r.len() as f64;
        }
        (i2t, t2i, total / m as f64)
    }

    #[test]
    fn row_paired_ranks_and_loss_equal_the_spelled_out_computation() {
        let (n, d) = (5, 4);
        let mut rnd = uniform(7);
        let unit = |v: Vec<f32>| {
            let l = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / l).collect::<Vec<f32>>()
        };
        let img: Vec<Vec<f32>> = (0..n)
            .map(|_| unit((0..d).map(|_| rnd()).collect()))
            .collect();
        // Images repeated on rows far apart (exact ties), a caption repeated (ties the other way).
        let row_image = [3, 0, 1, 3, 2, 4, 0, 3, 1, 2, 0];
        let mut cap: Vec<Vec<f32>> = row_image
            .iter()
            .map(|_| unit((0..d).map(|_| rnd()).collect()))
            .collect();
        cap[9] = cap[2].clone();
        let images = Tensor::new(img.clone(), &Device::Cpu).unwrap();
        let captions = Tensor::new(cap.clone(), &Device::Cpu).unwrap();
        let m = row_image.len();
        let even = |b: usize| -> Vec<usize> { (0..m).step_by(b).map(|s| b.min(m - s)).collect() };
        // Even batches (a CSV), and a worker's partial batch between full ones (shards).
        let splits = [
            even(1),
            even(3),
            even(4),
            even(11),
            even(64),
            vec![3, 1, 3, 3, 1],
        ];
        for batches in &splits {
            let (i2t, t2i, loss) = open_clip_way(&img, &cap, &row_image, 14.285714, batches);
            for block in [1, 4, 64] {
                let r =
                    row_paired(&images, &captions, &row_image, 14.285714, batches, block).unwrap();
                assert_eq!(r.image_to_text, i2t, "batches {batches:?} block {block}");
                assert_eq!(r.text_to_image, t2i, "batches {batches:?} block {block}");
                assert!((r.loss - loss).abs() < 1e-6, "{} {loss}", r.loss);
            }
        }
        let r = row_paired(&images, &captions, &row_image, 14.285714, &even(4), 4).unwrap();
        // Row 7's image is on rows 0 and 3 too: both tie with it and come first.
        assert!(r.text_to_image[7] >= 3, "{:?}", r.text_to_image);
        let m = row_metrics(&r, &[1, 5]);
        let zero: Vec<u32> = r.text_to_image.iter().map(|x| x - 1).collect();
        assert_eq!(
            m["text_to_image_median_rank"],
            (median_rank(&zero).floor() + 1.0)
        );
        assert_eq!(m["num_samples"], 11);
        assert_eq!(m["image_to_text_R@5"], recall(&r.image_to_text, 5));
        assert!(m.contains_key("clip_val_loss") && !m.contains_key("image_to_text_R@10"));
        assert!(row_paired(&images, &captions, &row_image[1..], 1.0, &even(4), 4).is_err());
        assert!(row_paired(&images, &captions, &row_image, 1.0, &[4, 4], 4).is_err());
        assert!(row_paired(&images, &captions, &row_image, 1.0, &[0, 11], 4).is_err());
    }

    /// What a PyTorch DataLoader over webdataset shards gives, spelled out: each worker
    /// batches its own rows; the loader takes one batch from each worker in turn and passes
    /// over the workers that are done.
    fn dataloader_way(rows: &[(usize, usize)], batch: usize) -> (Vec<usize>, Vec<usize>) {
        let workers = rows.iter().map(|r| r.0 + 1).max().unwrap_or(0);
        let mut queues: Vec<Vec<Vec<usize>>> = (0..workers)
            .map(|w| {
                let mut mine: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].0 == w).collect();
                mine.sort_by_key(|&r| rows[r].1);
                mine.chunks(batch).map(<[usize]>::to_vec).collect()
            })
            .collect();
        let (mut order, mut lens) = (Vec::new(), Vec::new());
        let mut next = vec![0; workers];
        while (0..workers).any(|w| next[w] < queues[w].len()) {
            for w in 0..workers {
                if let Some(b) = queues[w].get_mut(next[w]) {
                    lens.push(b.len());
                    order.append(b);
                    next[w] += 1;
                }
            }
        }
        (order, lens)
    }

    #[test]
    fn loader_order_deals_batches_as_the_dataloader_does() {
        // One stream (a CSV): the rows in place order, even batches, gaps closed up.
        let csv = [(0, 4), (0, 0), (0, 9), (0, 2), (0, 3)];
        assert_eq!(loader_order(&csv, 2), (vec![1, 3, 4, 0, 2], vec![2, 2, 1]));
        // Workers of unequal shares, rows listed out of order, some places missing (rows
        // left out), one worker with nothing.
        let mut rnd = uniform(3);
        for workers in [1, 2, 3, 4, 6] {
            let rows: Vec<(usize, usize)> = (0..40)
                .map(|i| {
                    let w = ((rnd() * 7.0) as usize).min(workers - 1);
                    (w * (w != 1) as usize, 3 * i + (rnd() * 2.0) as usize)
                })
                .rev()
                .collect();
            for batch in [1, 3, 5, 64] {
                let got = loader_order(&rows, batch);
                assert_eq!(
                    got,
                    dataloader_way(&rows, batch),
                    "{workers} workers, batch {batch}"
                );
            }
        }
    }
}
