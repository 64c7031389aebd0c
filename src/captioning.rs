//! CoCa captioning as CLIP_benchmark's `captioning` task runs it: open_clip's
//! `CoCa.generate` with its defaults (beam search through transformers' `BeamSearchScorer`:
//! 6 beams in 3 groups, 30 ids at most, the end token barred before the 5th id; scores are
//! sums of raw logits, not log-probabilities), each image's best hypothesis decoded by
//! `SimpleTokenizer.decode` and cut at `<end_of_text>`. The scores against the reference
//! captions are in `caption_metrics`.
//!
//! open_clip passes no diversity penalty, so its groups run the same search from the same
//! start: each group's beams, hypotheses and stopping are identical, and the best of all the
//! groups is the best of one. One group (`num_beams / num_beam_groups` beams) is computed.

use crate::engine::{Decoder, Prefixes, StepCache};
use crate::features::{Encoded, StreamOptions};
use crate::loader::LoadedModel;
use crate::tokenizer::{Tokenizer, EOT, SOT};

/// open_clip's `generate` arguments CLIP_benchmark leaves at their defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    pub num_beams: usize,
    pub num_beam_groups: usize,
    /// The longest sequence, the start token included (`MaxLengthCriteria`).
    pub seq_len: usize,
    /// The end token is barred while a sequence is shorter (`MinLengthLogitsProcessor`).
    pub min_seq_len: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            num_beams: 6,
            num_beam_groups: 3,
            seq_len: 30,
            min_seq_len: 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Stream(#[from] crate::features::Error),
}

impl GenerateOptions {
    /// open_clip's and transformers' own checks.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Options(m));
        if self.num_beams < 2 {
            return bad(format!(
                "--num-beams {}: beam search takes at least 2",
                self.num_beams
            ));
        }
        if self.num_beam_groups == 0
            || self.num_beam_groups > self.num_beams
            || !self.num_beams.is_multiple_of(self.num_beam_groups)
        {
            return bad(format!(
                "--num-beam-groups {} must divide --num-beams {}",
                self.num_beam_groups, self.num_beams
            ));
        }
        if self.seq_len <= self.min_seq_len {
            return bad(format!(
                "--seq-len {} must be larger than --min-seq-len {}",
                self.seq_len, self.min_seq_len
            ));
        }
        Ok(())
    }

    /// Beams a group holds.
    pub fn group_size(&self) -> usize {
        self.num_beams / self.num_beam_groups.max(1)
    }
}

/// transformers' `BeamHypotheses` (length penalty 1, no early stopping): the `size` best
/// finished sequences and their scores (sum / length), in the order they came.
#[derive(Debug, Default)]
struct Hypotheses {
    size: usize,
    beams: Vec<(f64, Vec<u32>)>,
    worst: f64,
}

impl Hypotheses {
    fn new(size: usize) -> Self {
        Self {
            size,
            beams: Vec::new(),
            worst: 1e9,
        }
    }

    fn add(&mut self, ids: Vec<u32>, sum: f32, len: usize) {
        let score = sum as f64 / len as f64;
        if self.beams.len() < self.size || score > self.worst {
            self.beams.push((score, ids));
            if self.beams.len() > self.size {
                // Python sorts (score, index) pairs: the first of the lowest goes.
                let mut order: Vec<(f64, usize)> = self
                    .beams
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (b.0, i))
                    .collect();
                order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.beams.remove(order[0].1);
                self.worst = order[1].0;
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    /// `is_done` without early stopping: nothing left can beat the worst kept.
    fn is_done(&self, best_sum: f32, len: usize) -> bool {
        self.beams.len() >= self.size && self.worst >= best_sum as f64 / len as f64
    }

    /// `finalize`'s pick: Python's stable sort by score, the last of the highest.
    fn best(&self) -> Option<&[u32]> {
        let mut best: Option<&(f64, Vec<u32>)> = None;
        for b in &self.beams {
            if best.is_none_or(|m| b.0 >= m.0) {
                best = Some(b);
            }
        }
        best.map(|b| b.1.as_slice())
    }
}

/// One image's search: its group's running beams (all one length) and their scores.
struct Search {
    beams: Vec<Vec<u32>>,
    /// The beam of the last step each beam extends.
    from: Vec<usize>,
    scores: Vec<f32>,
    hyps: Hypotheses,
    done: bool,
}

/// Each of `images` images' best id sequence (the start token first, the end token not
/// included). `logits(p)` gives the logits `[m * vocab]` of the id after each of a step's `m`
/// prefixes `p` (of `p.t` ids, prefix i of image `p.of[i]`, extending prefix `p.parent[i]`
/// of the last call); it is called once a step for the images still searching.
pub fn beam_search<F>(
    images: usize,
    vocab: usize,
    o: &GenerateOptions,
    mut logits: F,
) -> Result<Vec<Vec<u32>>, Error>
where
    F: FnMut(Prefixes) -> Result<Vec<f32>, Error>,
{
    o.check()?;
    let gs = o.group_size();
    let eos = EOT as usize;
    if vocab <= eos {
        return Err(Error::Options(format!(
            "a vocabulary of {vocab} ids has no end token"
        )));
    }
    // The group's first beam starts at 0, the others at -1e9, so they do not repeat it.
    let mut search: Vec<Search> = (0..images)
        .map(|_| Search {
            beams: vec![vec![SOT]; gs],
            from: Vec::new(),
            scores: (0..gs).map(|k| if k == 0 { 0.0 } else { -1e9 }).collect(),
            hyps: Hypotheses::new(gs),
            done: false,
        })
        .collect();
    // Where each image's beams were in the last call's prefixes.
    let mut offset = vec![0; images];
    let mut len = 1;
    loop {
        let live: Vec<usize> = (0..images).filter(|&i| !search[i].done).collect();
        if live.is_empty() {
            break;
        }
        let ids: Vec<u32> = live
            .iter()
            .flat_map(|&i| search[i].beams.iter().flatten().copied())
            .collect();
        let of: Vec<usize> = live
            .iter()
            .flat_map(|&i| std::iter::repeat_n(i, gs))
            .collect();
        let parent: Vec<usize> = live
            .iter()
            .flat_map(|&i| {
                let at = offset[i];
                search[i].from.iter().map(move |&k| at + k)
            })
            .collect();
        let z = logits(Prefixes {
            ids: &ids,
            t: len,
            of: &of,
            parent: &parent,
        })?;
        if z.len() != of.len() * vocab {
            return Err(Error::Options(format!(
                "{} logits for {} prefixes of a {vocab}-id vocabulary",
                z.len(),
                of.len()
            )));
        }
        for (r, &i) in live.iter().enumerate() {
            offset[i] = r * gs;
            let s = &mut search[i];
            let rows = &z[r * gs * vocab..(r + 1) * gs * vocab];
            let top = top_candidates(rows, &s.scores, vocab, 2 * gs, len < o.min_seq_len, eos);
            let (mut beams, mut scores) = (Vec::with_capacity(gs), Vec::with_capacity(gs));
            let mut from = Vec::with_capacity(gs);
            for (rank, &(score, k, token)) in top.iter().enumerate() {
                if token == eos {
                    // An end token outside the top `gs` candidates is not a hypothesis.
                    if rank < gs {
                        s.hyps.add(s.beams[k].clone(), score, len + 1);
                    }
                } else {
                    let mut b = s.beams[k].clone();
                    b.push(token as u32);
                    beams.push(b);
                    from.push(k);
                    scores.push(score);
                }
                if beams.len() == gs {
                    break;
                }
            }
            if beams.len() < gs {
                return Err(Error::Options(
                    "fewer candidates than beams besides the end token".into(),
                ));
            }
            s.done = s.hyps.is_done(top[0].0, len + 1);
            s.beams = beams;
            s.from = from;
            s.scores = scores;
        }
        len += 1;
        if len >= o.seq_len {
            break;
        }
    }
    // Beams still running at the end are hypotheses of their full length.
    Ok(search
        .into_iter()
        .map(|mut s| {
            if !s.done {
                for (b, &score) in s.beams.iter().zip(&s.scores) {
                    s.hyps.add(b.clone(), score, b.len());
                }
            }
            s.hyps.best().unwrap_or(&[SOT]).to_vec()
        })
        .collect())
}

/// Streams `samples` through the image tower (each batch decoded while the last is
/// encoded) and generates each image's caption ids from its tokens with `decoder`
/// ([`beam_search`]); the ids of sample `i` at `ids[i]` (empty for one left out).
pub fn generate(
    m: &LoadedModel,
    decoder: &Decoder,
    samples: Vec<crate::data::Sample>,
    stream: StreamOptions,
    o: &GenerateOptions,
    progress: impl FnMut(usize),
) -> Result<(Encoded, Vec<Vec<u32>>), Error> {
    o.check()?;
    let total = samples.len();
    let vocab = m.config.vocab_size;
    let mut ids = vec![Vec::new(); total];
    let enc = crate::features::stream_samples_with(m, samples, stream, progress, |px, at| {
        let (features, tokens) = m.model.encode_image_with_tokens(px)?;
        let memory = decoder.remember(&tokens)?;
        let mut cache = StepCache::default();
        let found = beam_search(at.len(), vocab, o, |p| {
            Ok(decoder.step_logits(&m.model, &memory, &mut cache, p)?)
        })
        .map_err(|e| match e {
            Error::Stream(e) => e,
            Error::Model(e) => e.into(),
            Error::Options(msg) => candle_core::Error::Msg(msg).into(),
        })?;
        for (&i, seq) in at.iter().zip(found) {
            ids[i] = seq;
        }
        Ok(features)
    })?;
    Ok((enc, ids))
}

/// The `n` best (score, beam, token) of the beams' scores plus their logits (`rows`: one
/// `vocab` row a beam), best first, ties to the lower flat index as torch's `topk`; the end
/// token barred where `bar_end`.
fn top_candidates(
    rows: &[f32],
    scores: &[f32],
    vocab: usize,
    n: usize,
    bar_end: bool,
    eos: usize,
) -> Vec<(f32, usize, usize)> {
    let mut top: Vec<(f32, usize, usize)> = Vec::with_capacity(n + 1);
    for (k, row) in rows.chunks(vocab).enumerate() {
        for (t, &z) in row.iter().enumerate() {
            let z = if bar_end && t == eos {
                f32::NEG_INFINITY
            } else {
                z
            };
            let v = z + scores[k];
            // Not better than the last kept (or NaN): a later index loses ties.
            if top.len() == n && v.partial_cmp(&top[n - 1].0) != Some(std::cmp::Ordering::Greater) {
                continue;
            }
            let at = top.partition_point(|c| c.0 >= v);
            top.insert(at, (v, k, t));
            top.truncate(n);
        }
    }
    top
}

/// CLIP_benchmark's caption of a generated sequence: decoded, cut at `<end_of_text>`,
/// `<start_of_text>` removed, stripped of Python's whitespace.
pub fn caption_text(ids: &[u32]) -> Result<String, u32> {
    let text = Tokenizer::global().decode(ids)?;
    let head = text.split("<end_of_text>").next().unwrap_or_default();
    Ok(head
        .replace("<start_of_text>", "")
        .trim_matches(is_python_space)
        .to_string())
}

/// `str.isspace()`: Unicode's White_Space and the four separators U+001C-U+001F.
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_as_open_clip_and_transformers_check_them() {
        assert!(GenerateOptions::default().check().is_ok());
        let with = |f: fn(&mut GenerateOptions)| {
            let mut o = GenerateOptions::default();
            f(&mut o);
            o.check()
        };
        assert!(with(|o| o.num_beams = 1).is_err());
        assert!(with(|o| o.num_beam_groups = 4).is_err());
        assert!(with(|o| o.num_beam_groups = 0).is_err());
        assert!(with(|o| o.seq_len = 5).is_err());
        assert_eq!(GenerateOptions::default().group_size(), 2);
    }

    #[test]
    fn hypotheses_keep_the_best_and_drop_the_first_of_the_worst() {
        let mut h = Hypotheses::new(2);
        h.add(vec![1], -4.0, 2); // -2
        h.add(vec![2], -2.0, 2); // -1
        assert_eq!(h.worst, -2.0);
        h.add(vec![3], -6.0, 2); // -3: not better than the worst
        assert_eq!(h.beams.len(), 2);
        h.add(vec![4], -3.0, 2); // -1.5: the -2 goes
        assert_eq!(
            h.beams.iter().map(|b| b.1[0]).collect::<Vec<_>>(),
            vec![2, 4]
        );
        assert_eq!(h.worst, -1.5);
        // Ties: the later one is picked.
        h.add(vec![5], -2.0, 2);
        assert_eq!(h.best(), Some(&[5u32][..]));
        // Done once nothing reachable beats the worst kept.
        assert!(h.is_done(-4.0, 2));
        assert!(!h.is_done(-1.0, 2));
    }

    #[test]
    fn candidates_are_sorted_with_ties_to_the_lower_index() {
        let rows = [1.0f32, 3.0, 3.0, 0.0, /* beam 1 */ 5.0, 0.0, 0.0, 0.0];
        let top = top_candidates(&rows, &[0.0, -1.0], 4, 3, false, 3);
        assert_eq!(top, vec![(4.0, 1, 0), (3.0, 0, 1), (3.0, 0, 2)]);
        // The end token (id 3 here) barred.
        let rows = [0.0f32, 0.0, 0.0, 9.0];
        let top = top_candidates(&rows, &[0.0], 4, 1, true, 3);
        assert_eq!(top, vec![(0.0, 0, 0)]);
    }

    #[test]
    fn caption_text_cuts_at_the_end_token_and_strips() {
        let t = Tokenizer::global();
        let mut ids = vec![SOT];
        ids.extend(t.encode("a dog on a beach"));
        ids.push(EOT);
        ids.extend([0, 0]);
        assert_eq!(caption_text(&ids).unwrap(), "a dog on a beach");
        assert_eq!(caption_text(&[SOT]).unwrap(), "");
        assert!(is_python_space('\u{1f}') && !'\u{1f}'.is_whitespace());
    }
}
