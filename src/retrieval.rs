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

/// Ranks for `images [N, D]` and `captions [M, D]` (L2-normalised), `caption_image[c]` the image
/// of caption `c`. Scores are computed `block` captions at a time as `captions @ images^T`
/// (CLIP_benchmark's matrix); both directions read the same blocks, so they see the same values.
pub fn ranks(
    images: &Tensor,
    captions: &Tensor,
    caption_image: &[usize],
    block: usize,
) -> candle_core::Result<Ranks> {
    let (n, _) = images.dims2()?;
    let (m, _) = captions.dims2()?;
    if caption_image.len() != m || caption_image.iter().any(|&i| i >= n) {
        candle_core::bail!("caption_image does not match the {m} captions and {n} images");
    }
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

    #[test]
    fn counted_ranks_equal_sorted_ranks_in_any_block_size() {
        let (n, m, d) = (7, 19, 5);
        let mut s = 1u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
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
}
