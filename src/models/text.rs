//! Mirrors the reference's text tower (`encode_text`) in candle tensor ops: token embedding,
//! causal transformer, `ln_final`, then a max over all positions (padding included) before
//! `text_projection`; for CLIP checkpoints the end-of-text position (the largest token id, or
//! MetaCLIP 2's first end-of-sequence id) instead of the max; for open_clip's CoCa the class token it appends after the prompt, under
//! its (legacy) padding mask, `ln_final` after pooling; for open_clip's SigLIP and CLIPA every
//! position without a mask, pooled at the last one (SigLIP's projected with a bias).

use super::config::{Config, Family};
use super::nn::{self, LayerNorm, Linear};
use super::transformer::{KvCache, Mask, Transformer};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// That `len` ids are `n` prompts of the context length `l` the tower takes.
pub fn check_length(len: usize, n: usize, l: usize) -> Result<()> {
    if len != n * l {
        candle_core::bail!("{} tokens per prompt, the model takes {l}", len / n.max(1));
    }
    Ok(())
}

/// A generation step's `len` ids for `n` prefixes of `t`, after `cached` positions, in a
/// tower of context `ctx` (`coca`: one that gives caption tokens). Both engines check so.
pub fn check_step(
    len: usize,
    n: usize,
    t: usize,
    cached: usize,
    ctx: usize,
    coca: bool,
) -> Result<()> {
    check_length(len, n, t)?;
    if !coca {
        candle_core::bail!("only CoCa's text tower gives caption tokens");
    }
    if t == 0 || t > ctx || t != cached + 1 {
        candle_core::bail!("a step to {t} ids after {cached} cached, for a context of {ctx}");
    }
    Ok(())
}

/// Where a CLIP text tower pools a prompt: the first position holding the largest id (the
/// end-of-text token), as the reference's `argmax`.
pub fn eot_position<T: PartialOrd + Copy>(ids: &[T]) -> usize {
    let mut best = 0;
    for (i, &t) in ids.iter().enumerate() {
        if t > ids[best] {
            best = i;
        }
    }
    best
}

/// Where a CLIP-layout text tower pools a prompt: at the first `eos` id where it is pooled at
/// a tokenizer's end-of-sequence id (open_clip's `pool_type: eos`; the first position when
/// the prompt holds none, as its `argmax` of the matches gives), else at the largest id.
pub fn pool_position<T: PartialOrd + Copy>(ids: &[T], eos: Option<T>) -> usize {
    match eos {
        Some(e) => ids.iter().position(|&t| t == e).unwrap_or(0),
        None => eot_position(ids),
    }
}

/// Positions a CLIP text tower computes for prompts of `l` ids each: up to the latest
/// pooled position among them (`pool_position`). Under the causal mask no position sees a
/// later one, so the pooled rows do not depend on what follows; ImageNet's prompts end after
/// ~10 of 77. (PyramidCLIP's max over every position needs them all.)
pub fn clip_span<T: PartialOrd + Copy>(ids: &[T], l: usize, eos: Option<T>) -> usize {
    if l == 0 {
        return 0;
    }
    ids.chunks(l)
        .map(|row| pool_position(row, eos) + 1)
        .max()
        .unwrap_or(l)
}

/// Positions a CoCa text tower computes for prompts of `l` ids each (besides its class token):
/// through the one after the last non-pad id of any of them. The class token sees a key at
/// position j > 0 only where id j - 1 is not the pad id 0 (open_clip's mask for its released
/// CoCa weights, shifted by one), and no position sees a later one, so the positions after
/// that one reach no output. At most `l`.
pub fn coca_span<T: PartialEq + Default + Copy>(ids: &[T], l: usize) -> usize {
    if l == 0 {
        return 0;
    }
    let pad = T::default();
    ids.chunks(l)
        .map(|row| row.iter().rposition(|&t| t != pad).map_or(1, |p| p + 2))
        .max()
        .unwrap_or(l)
        .min(l)
}

/// Which keys of a CoCa prompt its queries cannot see beyond the causal mask: the `span`
/// positions computed then the class token (`span + 1` keys), key j > 0 hidden where id
/// j - 1 (the class token: id `l - 1`) is the pad id 0. open_clip masks the keys so for its
/// released CoCa weights (`correct_cls_mask=False`).
pub fn coca_hidden<T: PartialEq + Default + Copy>(prompt: &[T], span: usize) -> Vec<bool> {
    let pad = T::default();
    let last = prompt.len().saturating_sub(1);
    (0..=span)
        .map(|j| match j {
            0 => false,
            j if j == span => prompt[last] == pad,
            j => prompt[j - 1] == pad,
        })
        .collect()
}

/// The positions a tower of `family` computes for prompts of `l` ids: CLIP's up to the last
/// pooled position (at `eos` ids where it pools there) when `causal`, CoCa's up to the last
/// non-pad id and one more, PyramidCLIP's, SigLIP's, CLIPA's and a CLIP tower's without
/// causal mask (every position sees every other) all.
pub fn span<T: PartialOrd + Default + Copy>(
    family: Family,
    eos: Option<T>,
    causal: bool,
    ids: &[T],
    l: usize,
) -> usize {
    match family {
        Family::PyramidClip | Family::Siglip | Family::HfText | Family::Clipa => l,
        Family::Clip | Family::CustomText if !causal => l,
        Family::Clip | Family::CustomText => clip_span(ids, l, eos),
        Family::Coca => coca_span(ids, l),
    }
}

#[derive(Debug, Clone)]
pub struct TextEncoder {
    token_embedding: Tensor,
    positional_embedding: Tensor,
    /// CoCa's class token, appended after the prompt's positions.
    cls_emb: Option<Tensor>,
    transformer: Transformer,
    ln_final: LayerNorm,
    /// `x @ text_projection` as a linear layer (SigLIP's has a bias; none for
    /// `no_text_projection`).
    text_projection: Option<Linear>,
    family: super::Family,
    /// The id a CLIP tower pools at (`pool_type: eos`), else the largest.
    eos: Option<u32>,
    /// CLIP's causal mask (open_clip's `no_causal_mask` leaves it out).
    causal: bool,
}

/// The text projection's `[embed_dim, width]` weight and bias: CLIP's `text_projection`
/// `[width, embed_dim]` parameter, or SigLIP's `nn.Linear` (`text_projection.weight`, `.bias`);
/// None for a SigLIP without one.
pub type Projection = Option<(Tensor, Option<Tensor>)>;

pub fn projection(cfg: &Config, vb: &VarBuilder) -> Result<Projection> {
    let w = cfg.transformer_width;
    match &cfg.siglip {
        Some(s) if s.no_text_projection => {
            if cfg.embed_dim != w {
                candle_core::bail!(
                    "a text tower without projection gives {w}-wide features, not {}",
                    cfg.embed_dim
                );
            }
            Ok(None)
        }
        Some(_) => {
            let p = vb.pp("text_projection");
            Ok(Some((
                nn::load(&p, &[cfg.embed_dim, w], "weight")?,
                Some(nn::load(&p, &[cfg.embed_dim], "bias")?),
            )))
        }
        None => Ok(Some((
            nn::load(vb, &[w, cfg.embed_dim], "text_projection")?.t()?,
            None,
        ))),
    }
}

/// The final LayerNorm's eps: SigLIP's 1e-6, else torch's default.
pub fn ln_final_eps(cfg: &Config) -> f64 {
    super::transformer::Style::of(cfg).eps
}

impl TextEncoder {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let w = cfg.transformer_width;
        let dt = vb.dtype();
        let token_embedding = nn::load(&vb.pp("token_embedding"), &[cfg.vocab_size, w], "weight")?;
        let positional_embedding =
            nn::load(&vb, &[cfg.text_positions(), w], "positional_embedding")?;
        let proj = projection(cfg, &vb)?;
        let cls_emb = (cfg.family == Family::Coca)
            .then(|| nn::load(&vb, &[w], "cls_emb"))
            .transpose()?;
        Ok(Self {
            token_embedding,
            positional_embedding,
            cls_emb,
            transformer: Transformer::new(
                w,
                cfg.transformer_layers,
                cfg.transformer_heads,
                None,
                super::transformer::Style::of(cfg),
                vb.pp("transformer"),
            )?,
            ln_final: nn::layer_norm_eps(w, ln_final_eps(cfg), vb.pp("ln_final"))?,
            text_projection: proj
                .map(|(w, b)| Linear::from_parts(&w, b, dt))
                .transpose()?,
            family: cfg.family,
            eos: cfg.text_eos_id(),
            causal: cfg.text_causal(),
        })
    }
}

impl Module for TextEncoder {
    /// `tokens`: `[N, context_length]` integer ids. Returns `[N, embed_dim]` (not normalised).
    fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (n, l) = tokens.dims2()?;
        let ctx = self.positional_embedding.dim(0)? - usize::from(self.cls_emb.is_some());
        if l != ctx {
            candle_core::bail!("{l} tokens per prompt, the model takes {ctx}");
        }
        let tokens = tokens.to_dtype(DType::U32)?;
        let vocab = self.token_embedding.dim(0)?;
        let top = tokens.max_all()?.to_scalar::<u32>()?;
        if top as usize >= vocab {
            candle_core::bail!("token id {top} is outside the vocabulary of {vocab}");
        }
        if let Some(cls) = &self.cls_emb {
            return self.forward_coca(&tokens, cls);
        }
        if self.family.pools_last() {
            return self.forward_last(&tokens);
        }
        // CLIP pools one position per prompt: the positions after the batch's latest one are
        // left out (see `clip_span`); PyramidCLIP's max needs every position.
        let (tokens, eot) = match self.family {
            Family::PyramidClip
            | Family::Coca
            | Family::Siglip
            | Family::HfText
            | Family::Clipa => (tokens, None),
            Family::Clip | Family::CustomText => {
                let rows = tokens.to_vec2::<u32>()?;
                let eot: Vec<usize> = rows.iter().map(|r| pool_position(r, self.eos)).collect();
                // Without the causal mask every position reaches the pooled one.
                let span = match self.causal {
                    true => eot.iter().map(|&p| p + 1).max().unwrap_or(l),
                    false => l,
                };
                (tokens.narrow(1, 0, span)?, Some(eot))
            }
        };
        let span = tokens.dim(1)?;
        let ids = tokens.flatten_all()?;
        let x = self
            .token_embedding
            .index_select(&ids, 0)?
            .reshape((n, span, ()))?;
        let x = x.broadcast_add(&self.positional_embedding.narrow(0, 0, span)?)?;
        let mask = if self.causal {
            Mask::Causal
        } else {
            Mask::None
        };
        let x = self.transformer.forward(&x, mask)?;
        let x = self.ln_final.forward(&x)?;
        let x = match eot {
            // Max over every position, padding included (the reference's pooling).
            None => x.max(1)?,
            Some(eot) => {
                let rows: Vec<Tensor> = eot
                    .iter()
                    .enumerate()
                    .map(|(b, &p)| x.get(b)?.get(p))
                    .collect::<Result<_>>()?;
                Tensor::stack(&rows, 0)?
            }
        };
        self.project(&x)
    }
}

impl TextEncoder {
    /// The pooled rows through the projection (if any).
    fn project(&self, x: &Tensor) -> Result<Tensor> {
        match &self.text_projection {
            Some(p) => p.forward(x),
            None => Ok(x.clone()),
        }
    }

    /// CoCa's token rows for its captioning decoder: the first `context_length - 1` positions
    /// (the decoder predicts each next id) through the blocks under the causal mask and the
    /// prompt's hidden keys (open_clip masks them for every query, not only the class
    /// token's), before `ln_final`. The class token comes after them, so no row sees it.
    /// `[N, context_length - 1, width]`.
    pub fn caption_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        let l = tokens.dim(1)?;
        self.token_rows(tokens, l.saturating_sub(1))
    }

    /// The same rows at every position of generated prefixes `[N, t]` (`t` at most the
    /// context): `[N, t, width]`.
    pub fn prefix_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        let t = tokens.dim(1)?;
        let ctx = self.positional_embedding.dim(0)? - usize::from(self.cls_emb.is_some());
        if t == 0 || t > ctx {
            candle_core::bail!("a prefix of {t} ids for a context of {ctx}");
        }
        self.token_rows(tokens, t)
    }

    /// [`Self::prefix_tokens`]' rows at the last position only of `n` prefixes of `t` ids
    /// (`ids` `[n * t]`), prefix b extending `cache`'s prefix `parent[b]` of `t - 1` ids (no
    /// parents when `t` is 1), whose keys and values the cache holds; it then holds these
    /// prefixes'. `[n, 1, width]`, each row `prefix_tokens`' last.
    pub fn prefix_step(
        &self,
        ids: &[u32],
        n: usize,
        t: usize,
        cache: &mut KvCache,
        parent: &[usize],
    ) -> Result<Tensor> {
        let ctx = self.positional_embedding.dim(0)? - usize::from(self.cls_emb.is_some());
        check_step(ids.len(), n, t, cache.len(), ctx, self.cls_emb.is_some())?;
        let vocab = self.token_embedding.dim(0)?;
        let last: Vec<u32> = ids.chunks(t).map(|p| p[t - 1]).collect();
        if let Some(&bad) = last.iter().find(|&&id| id as usize >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
        }
        let dev = self.token_embedding.device();
        let x = self
            .token_embedding
            .index_select(&Tensor::new(last, dev)?, 0)?
            .reshape((n, 1, ()))?
            .broadcast_add(&self.positional_embedding.narrow(0, t - 1, 1)?)?;
        // The new position sees every earlier one but those CoCa's pad mask hides.
        let hidden: Vec<bool> = ids
            .chunks(t)
            .flat_map(|p| coca_hidden(p, t).into_iter().take(t))
            .collect();
        let mask = match hidden.contains(&true) {
            true => {
                let add = hidden.iter().map(|&h| match h {
                    true => f32::NEG_INFINITY,
                    false => 0.0,
                });
                Some(Tensor::from_iter(add, dev)?.reshape((n, 1, t))?)
            }
            false => None,
        };
        let mask = mask.as_ref().map_or(Mask::None, Mask::Add);
        self.transformer.step(&x, cache, parent, mask)
    }

    /// The first `s` positions of each row of `tokens`.
    fn token_rows(&self, tokens: &Tensor, s: usize) -> Result<Tensor> {
        let n = tokens.dim(0)?;
        if self.cls_emb.is_none() || s == 0 {
            candle_core::bail!("only CoCa's text tower gives caption tokens");
        }
        let tokens = tokens.to_dtype(DType::U32)?;
        let vocab = self.token_embedding.dim(0)?;
        let top = tokens.max_all()?.to_scalar::<u32>()?;
        if top as usize >= vocab {
            candle_core::bail!("token id {top} is outside the vocabulary of {vocab}");
        }
        let x = self
            .token_embedding
            .index_select(&tokens.narrow(1, 0, s)?.flatten_all()?, 0)?
            .reshape((n, s, ()))?
            .broadcast_add(&self.positional_embedding.narrow(0, 0, s)?)?;
        let mut mask = Vec::with_capacity(n * s * s);
        for r in tokens.to_vec2::<u32>()? {
            let hidden = coca_hidden(&r, s);
            for i in 0..s {
                mask.extend((0..s).map(|j| match j > i || hidden[j] {
                    true => f32::NEG_INFINITY,
                    false => 0.0,
                }));
            }
        }
        let mask = Tensor::from_vec(mask, (n, s, s), x.device())?;
        self.transformer.forward(&x, Mask::Add(&mask))
    }

    /// SigLIP and CLIPA: every position, no mask (padding included), `ln_final`, the last
    /// position.
    fn forward_last(&self, tokens: &Tensor) -> Result<Tensor> {
        let (n, l) = tokens.dims2()?;
        let x = self
            .token_embedding
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((n, l, ()))?
            .broadcast_add(&self.positional_embedding)?;
        let x = self.transformer.forward(&x, Mask::None)?;
        let x = self.ln_final.forward(&x.narrow(1, l - 1, 1)?.squeeze(1)?)?;
        self.project(&x)
    }

    /// CoCa: the prompts' first `coca_span` positions then the class token (at the last
    /// position's embedding), under the causal mask and the prompts' key mask; the class
    /// token's output after `ln_final`.
    fn forward_coca(&self, tokens: &Tensor, cls: &Tensor) -> Result<Tensor> {
        let (n, l) = tokens.dims2()?;
        let rows = tokens.to_vec2::<u32>()?;
        let span = rows.iter().map(|r| coca_span(r, l)).max().unwrap_or(l);
        let w = cls.dim(0)?;
        let ids = tokens.narrow(1, 0, span)?.flatten_all()?;
        let x = self
            .token_embedding
            .index_select(&ids, 0)?
            .reshape((n, span, w))?
            .broadcast_add(&self.positional_embedding.narrow(0, 0, span)?)?;
        let c = (cls + self.positional_embedding.get(l)?)?
            .reshape((1, 1, w))?
            .broadcast_as((n, 1, w))?;
        let x = Tensor::cat(&[&x, &c.contiguous()?], 1)?;
        // Causal (the class token is last) and each prompt's hidden keys, added to the scores.
        let keys = span + 1;
        let mut mask = Vec::with_capacity(n * keys * keys);
        for r in &rows {
            let hidden = coca_hidden(r, span);
            for i in 0..keys {
                mask.extend((0..keys).map(|j| {
                    if j > i || hidden[j] {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                }));
            }
        }
        let mask = Tensor::from_vec(mask, (n, keys, keys), x.device())?;
        let x = self.transformer.forward(&x, Mask::Add(&mask))?;
        let x = self.ln_final.forward(&x.narrow(1, span, 1)?.squeeze(1)?)?;
        self.project(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_ends_at_the_latest_end_of_text() {
        // The first largest id, as `argmax`.
        assert_eq!(eot_position(&[49406u32, 320, 49407, 0, 49407]), 2);
        assert_eq!(eot_position(&[0i64; 4]), 0);
        let ids = [[5u32, 9, 0, 0], [5, 7, 8, 9], [9, 0, 0, 0]].concat();
        assert_eq!(clip_span(&ids, 4, None), 4);
        assert_eq!(clip_span(&ids[..4], 4, None), 2);
        assert_eq!(clip_span(&ids[8..], 4, None), 1);
        assert_eq!(clip_span::<u32>(&[], 4, None), 4);
        // Pooled at the first eos id (2 here), else the first position.
        let ids = [[0u32, 7, 2, 1, 2], [0, 9, 8, 7, 1]].concat();
        assert_eq!(pool_position(&ids[..5], Some(2)), 2);
        assert_eq!(pool_position(&ids[5..], Some(2)), 0);
        assert_eq!(clip_span(&ids, 5, Some(2)), 3);
        assert_eq!(span(Family::Clip, Some(2), true, &ids, 5), 3);
        assert_eq!(span(Family::Clip, None, true, &ids, 5), 2);
        // Without the causal mask every position reaches the pooled one.
        assert_eq!(span(Family::Clip, None, false, &ids, 5), 5);
    }

    #[test]
    fn coca_computes_one_position_past_the_last_id() {
        let ids = [[7u32, 5, 9, 0, 0, 0], [7, 0, 3, 9, 0, 0]].concat();
        assert_eq!(coca_span(&ids, 6), 5);
        assert_eq!(coca_span(&ids[..6], 6), 4);
        let full = [7u32, 1, 2, 3, 4, 9];
        assert_eq!(coca_span(&full, 6), 6);
        // Key j > 0 hidden where id j - 1 is the pad id; the class token (last) where the
        // prompt's last id is.
        assert_eq!(
            coca_hidden(&ids[6..], 5),
            [false, false, true, false, false, true]
        );
        assert_eq!(coca_hidden(&full, 6), [false; 7]);
        assert_eq!(span(Family::Coca, None, true, &ids, 6), 5);
        assert_eq!(span(Family::PyramidClip, None, true, &ids, 6), 6);
    }
}
