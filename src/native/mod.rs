//! The native engine: our own fp32 CPU kernels, lowest layer first — `simd` (run-time
//! dispatch, `exp`), `gemm` (the packed matrix multiply), `kernels` (LayerNorm, softmax,
//! attention, depthwise) and `conv` (channels-last and Winograd convolutions), `layers`
//! (packed weights), then the encoders `transformer`, `vit`, `text`, `resnet` and the others. A model built
//! here runs only this code; tensors appear only at its edges.

pub mod amx;
pub mod bf16;
pub mod coca;
pub mod conv;
pub mod convnext;
pub mod eva;
pub mod fastvit;
pub mod gemm;
pub mod hf_text;
pub mod kernels;
pub mod layers;
pub mod resnet;
pub mod siglip;
pub mod simd;
pub mod text;
pub mod transformer;
pub mod vit;
pub mod vitamin;
pub mod weight;

use crate::models::Config;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::{Arc, Mutex};

/// The native engine's tuning switches, read once at the edge (`--gemm`, `--split-batch`, ...)
/// and fixed when the model is built. The defaults are the measured best.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeOptions {
    /// Kernel family of the products (a narrower one than the CPU's for comparisons).
    pub gemm: gemm::GemmConfig,
    /// Split a batch into one slice per thread, each computed serially.
    pub split_batch: bool,
    /// Bytes of the widest activation a slice may hold before it is computed in parts
    /// (None: by precision, [`slice_budget`]).
    pub slice_bytes: Option<usize>,
    /// Winograd for the ResNet's 3x3 stride-1 convolutions.
    pub winograd: bool,
    /// Use the bf16 kernels for `--precision bf16` where the CPU has them (off: the fp32
    /// fallback, for comparisons).
    pub bf16_kernels: bool,
    /// Run those bf16 products on AMX tiles where the CPU has them (off by default: the binary
    /// turns it on after a probe in a child process; a library caller may after
    /// `bf16::amx_self_test` passes).
    pub amx: bool,
}

impl NativeOptions {
    /// Whether `--precision bf16` can run the native bf16 products here.
    pub fn bf16_available(&self) -> bool {
        self.bf16_kernels && bf16::supported()
    }

    /// These options with the products in bf16 (`on`, what the plan chose) or not, on AMX when
    /// allowed and the process holds the tile state.
    pub fn with_bf16(mut self, on: bool) -> Self {
        self.gemm.bf16 = on;
        self.gemm.amx = on && self.amx && amx::enable();
        self
    }

    /// The bf16 kernel the products run on (for logs and outputs), None in fp32.
    pub fn bf16_kernel(&self) -> Option<&'static str> {
        match (self.gemm.bf16, self.gemm.amx) {
            (false, _) => None,
            (true, true) => Some("amx"),
            (true, false) => Some("avx512bf16"),
        }
    }
}

impl Default for NativeOptions {
    fn default() -> Self {
        Self {
            gemm: gemm::GemmConfig::detected(),
            split_batch: true,
            slice_bytes: None,
            winograd: true,
            bf16_kernels: true,
            amx: false,
        }
    }
}

#[derive(Debug)]
pub enum ImageEncoder {
    Vit(Box<vit::VisionTransformer>),
    ResNet(Box<resnet::ModifiedResNet>),
    ConvNext(Box<convnext::ConvNext>),
    Siglip(Box<siglip::SiglipVision>),
    Eva(Box<eva::EvaVision>),
    FastVit(Box<fastvit::FastVit>),
}

impl ImageEncoder {
    fn forward(&self, px: &[f32], n: usize) -> Result<Vec<f32>> {
        match self {
            Self::Vit(m) => m.forward(px, n),
            Self::ResNet(m) => m.forward(px, n),
            Self::ConvNext(m) => m.forward(px, n),
            Self::FastVit(m) => m.forward(px, n),
            Self::Siglip(m) => m.forward(px, n),
            Self::Eva(m) => m.forward(px, n),
        }
    }
}

/// The text tower: CLIP's transformer (and its variants) or an HF encoder.
#[derive(Debug)]
pub enum TextTower {
    Clip(Box<text::TextEncoder>),
    Hf(Box<hf_text::HfTextEncoder>),
}

impl TextTower {
    fn forward(&self, ids: &[u32], n: usize) -> Result<Vec<f32>> {
        match self {
            Self::Clip(m) => m.forward(ids, n),
            Self::Hf(m) => m.forward(ids, n),
        }
    }
}

/// A tensor's elements on the host as f32, in order (what the native kernels read).
pub fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

/// A tensor of token ids on the host as u32, in order.
pub fn host_u32(t: &Tensor) -> Result<Vec<u32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_vec1::<u32>()
}

/// The whole model on the native engine (CPU, f32).
#[derive(Debug)]
pub struct PyramidClip {
    pub visual: ImageEncoder,
    pub text: TextTower,
    config: Config,
    options: NativeOptions,
}

impl PyramidClip {
    /// `vb` must hold f32 CPU tensors (the weights are copied into packed buffers).
    pub fn new(cfg: &Config, vb: VarBuilder, options: NativeOptions) -> Result<Self> {
        if !vb.device().is_cpu() || vb.dtype() != DType::F32 {
            candle_core::bail!("the native engine runs on the CPU in f32");
        }
        let g = options.gemm;
        let visual = if cfg.siglip.is_some() {
            let trunk = vb.pp("visual").pp("trunk");
            ImageEncoder::Siglip(Box::new(siglip::SiglipVision::new(cfg, trunk, g)?))
        } else if cfg.vision_eva.is_some() {
            ImageEncoder::Eva(Box::new(eva::EvaVision::new(cfg, vb.pp("visual"), g)?))
        } else if cfg.vision_fastvit.is_some() {
            let trunk = vb.pp("visual").pp("trunk");
            ImageEncoder::FastVit(Box::new(fastvit::FastVit::new(cfg, trunk, g)?))
        } else if cfg.vision_timm.is_some() {
            ImageEncoder::ConvNext(Box::new(convnext::ConvNext::new(cfg, vb.pp("visual"), g)?))
        } else if cfg.is_vit() {
            ImageEncoder::Vit(Box::new(vit::VisionTransformer::new(
                cfg,
                vb.pp("visual"),
                g,
            )?))
        } else {
            ImageEncoder::ResNet(Box::new(resnet::ModifiedResNet::new(
                cfg,
                vb.pp("visual"),
                g,
                options.winograd,
            )?))
        };
        Ok(Self {
            visual,
            text: {
                let vb = crate::models::text_root(cfg, vb);
                if cfg.hf_text.is_some() {
                    TextTower::Hf(Box::new(hf_text::HfTextEncoder::new(cfg, vb, g)?))
                } else {
                    TextTower::Clip(Box::new(text::TextEncoder::new(cfg, vb, g)?))
                }
            },
            config: cfg.clone(),
            options,
        })
    }

    pub fn options(&self) -> NativeOptions {
        self.options
    }

    /// `pixels`: `[N, 3, R, R]` normalised images (CPU) -> `[N, embed_dim]` raw features.
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = pixels.dims4()?;
        let px = host_f32(pixels)?;
        let part = self.items_per_part(image_item_bytes(&self.config));
        let out = self.split(&px, n, c * h * w, part, |x, k| self.visual.forward(x, k))?;
        Tensor::from_vec(out, (n, self.config.embed_dim), &Device::Cpu)
    }

    /// `tokens`: `[N, context_length]` ids (CPU) -> `[N, embed_dim]` raw features.
    pub fn encode_text(&self, tokens: &Tensor) -> Result<Tensor> {
        let (n, l) = tokens.dims2()?;
        let ids = host_u32(tokens)?;
        // A CLIP tower computes only up to the latest end-of-text position (`text.rs`).
        let positions = match &self.config.hf_text {
            Some(h) => crate::models::hf_text::hf_span(&ids, l, h.pad_id),
            None => {
                let c = &self.config;
                crate::models::text::span(c.family, c.text_eos_id(), c.text_causal(), &ids, l)
            }
        };
        let part = self.items_per_part(text_item_bytes(&self.config, positions));
        let out = self.split(&ids, n, l, part, |x, k| self.text.forward(x, k))?;
        Tensor::from_vec(out, (n, self.config.embed_dim), &Device::Cpu)
    }

    /// CoCa: raw image features `[N, embed_dim]` and the tokens its captioning decoder attends
    /// to, `[N, queries - 1, embed_dim]`.
    pub fn encode_image_with_tokens(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        let ImageEncoder::Vit(v) = &self.visual else {
            candle_core::bail!("only CoCa's image tower gives tokens")
        };
        let (n, c, h, w) = pixels.dims4()?;
        let px = host_f32(pixels)?;
        let part = self.items_per_part(image_item_bytes(&self.config));
        let out = self.split(&px, n, c * h * w, part, |x, k| v.forward_with_tokens(x, k))?;
        let e = self.config.embed_dim;
        let per = out.len() / n.max(1);
        let both = Tensor::from_vec(out, (n, per), &Device::Cpu)?;
        let tokens = both.narrow(1, e, per - e)?.reshape((n, (per - e) / e, e))?;
        Ok((both.narrow(1, 0, e)?.contiguous()?, tokens.contiguous()?))
    }

    /// CoCa: the text tower's rows at each caption's positions but the last, before
    /// `ln_final`, `[N, context_length - 1, width]`.
    pub fn caption_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        let TextTower::Clip(t) = &self.text else {
            candle_core::bail!("only CoCa's text tower gives caption tokens")
        };
        let (n, l) = tokens.dims2()?;
        let ids = host_u32(tokens)?;
        let w = self.config.transformer_width;
        let out = t.caption_tokens(&ids, n)?;
        Tensor::from_vec(out, (n, l.saturating_sub(1), w), &Device::Cpu)
    }

    /// CoCa: the text tower's rows at every position of `n` generated prefixes `[N, t]`,
    /// before `ln_final`, `[N, t, width]`.
    pub fn prefix_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        let TextTower::Clip(t) = &self.text else {
            candle_core::bail!("only CoCa's text tower gives caption tokens")
        };
        let (n, len) = tokens.dims2()?;
        let out = t.prefix_tokens(&host_u32(tokens)?, n, len)?;
        Tensor::from_vec(out, (n, len, self.config.transformer_width), &Device::Cpu)
    }

    /// CoCa: [`Self::prefix_tokens`]' row at the last position only of `n` prefixes `ids` of
    /// `t` ids, their earlier positions read from `cache` (prefix b extending its prefix
    /// `parent[b]`; none when `t` is 1). `[n, width]`.
    pub fn prefix_step(
        &self,
        ids: &[u32],
        n: usize,
        t: usize,
        cache: &mut transformer::KvCache,
        parent: &[usize],
    ) -> Result<Vec<f32>> {
        let TextTower::Clip(tower) = &self.text else {
            candle_core::bail!("only CoCa's text tower gives caption tokens")
        };
        tower.prefix_step(ids, n, t, cache, parent)
    }

    /// Items a slice computes at once, for items whose widest activation takes `item_bytes`.
    fn items_per_part(&self, item_bytes: usize) -> usize {
        let budget = self
            .options
            .slice_bytes
            .unwrap_or_else(|| slice_budget(self.options.gemm.bf16));
        (budget / item_bytes.max(1)).max(1)
    }

    fn split<T: Sync>(
        &self,
        x: &[T],
        n: usize,
        per_item: usize,
        part: usize,
        f: impl Fn(&[T], usize) -> Result<Vec<f32>> + Sync,
    ) -> Result<Vec<f32>> {
        let f = |x: &[T], k: usize| in_parts(x, k, per_item, part, &f);
        if self.options.split_batch {
            split_batch(x, n, per_item, f)
        } else {
            f(x, n)
        }
    }
}

/// The default activation budget of a slice: 16 MB in fp32, 8 MB with bf16 products. Large
/// slices lose to cache and memory traffic (and, past glibc's 32 MB mmap threshold, to page
/// faults on every fresh buffer); small ones re-stream the weights more often. Measured on
/// Zen 4, 2 threads, eval's default batches (64 images, 128 prompts), images/s per slice
/// size: RN50 fp32 19.7 at 2-4 images vs 16.9 at 32, bf16 36.2 at 2 vs 29.4 at 32; ViT-B-16
/// bf16 11.1 at 2 vs 7.9 at 32; text bf16 65.4 prompts/s at 4 vs 59.6 at 32 (52.7 at 64);
/// ViT-B-32 fp32 the other way, 24.4 at 32 vs 23.1 at 8 (docs/PERFORMANCE.md, session 11).
pub fn slice_budget(bf16: bool) -> usize {
    if bf16 {
        8 << 20
    } else {
        16 << 20
    }
}

/// Bytes of an image's widest activation: a ViT's MLP hidden layer (tokens x 4 width), a
/// ResNet's stem output or first stage (whichever is larger).
fn image_item_bytes(cfg: &Config) -> usize {
    let r = cfg.image_resolution;
    let w = cfg.vision_width;
    let floats = match cfg.vision_patch_size {
        Some(p) if cfg.is_vit() => ((r / p.max(1)).pow(2) + 1) * 4 * w,
        _ => ((r / 2).pow(2) * w).max((r / 4).pow(2) * 4 * w),
    };
    floats * 4
}

/// Bytes of a prompt's widest activation: the MLP hidden layer (positions x 4 width).
fn text_item_bytes(cfg: &Config, positions: usize) -> usize {
    positions * 4 * cfg.transformer_width * 4
}

/// `f` over `n` items in consecutive parts of at most `part` items, as equal as they can be
/// (a small last part computes less efficiently), outputs concatenated: every item's features
/// are the same either way (see [`split_batch`]).
fn in_parts<T>(
    x: &[T],
    n: usize,
    per_item: usize,
    part: usize,
    f: &impl Fn(&[T], usize) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let parts = n.div_ceil(part.max(1));
    if parts <= 1 {
        return f(x, n);
    }
    let mut out = Vec::new();
    let mut i0 = 0;
    for p in 0..parts {
        let k = n / parts + usize::from(p < n % parts);
        out.extend(f(&x[i0 * per_item..(i0 + k) * per_item], k)?);
        i0 += k;
    }
    Ok(out)
}

/// Fewest items a thread gets when a batch is split between the threads: below this a
/// thread's products have too few rows to fill the register tiles.
const MIN_PER_THREAD: usize = 4;

/// Runs `f` on a batch of `n` items (`per_item` inputs each) as one slice per thread, each
/// slice computed serially on its own single-thread pool; the items left over (fewer than one
/// per thread) go through `f` on all threads. The threads then never wait for each other
/// inside a layer (the ends of products, LayerNorm, softmax); at batch 16 on 2 threads: text
/// +2.5%, ViT-B-32 +1%, RN50 +6%. (Nesting the slices in the global pool instead was slower:
/// stolen tasks chained the waits.) Every item's features are bit-identical either way: no
/// kernel mixes rows of different items, a product's summation order depends on its depth
/// only, and edge tiles share the full tiles' arithmetic.
fn split_batch<T: Sync>(
    x: &[T],
    n: usize,
    per_item: usize,
    f: impl Fn(&[T], usize) -> Result<Vec<f32>> + Sync,
) -> Result<Vec<f32>> {
    let threads = rayon::current_num_threads();
    let per = n / threads.max(1);
    if threads < 2 || per < MIN_PER_THREAD {
        return f(x, n);
    }
    let pools = serial_pools(threads)?;
    let f = &f;
    let outs = std::thread::scope(|scope| {
        let handles: Vec<_> = pools
            .iter()
            .enumerate()
            .map(|(t, pool)| {
                let part = &x[t * per * per_item..(t + 1) * per * per_item];
                scope.spawn(move || pool.install(|| f(part, per)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(candle_core::Error::Msg("a batch slice panicked".into()))
                })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut out: Vec<f32> = outs.into_iter().flatten().collect();
    if n > per * threads {
        out.extend(f(&x[per * threads * per_item..], n - per * threads)?);
    }
    Ok(out)
}

/// `threads` single-thread pools, kept for the process so each keeps its packing buffers.
fn serial_pools(threads: usize) -> Result<Vec<Arc<rayon::ThreadPool>>> {
    static POOLS: Mutex<Vec<Arc<rayon::ThreadPool>>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    while pools.len() < threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "pyramidclip-slice".into())
            .build()
            .map_err(|e| candle_core::Error::Msg(format!("starting a worker thread: {e}")))?;
        pools.push(Arc::new(pool));
    }
    Ok(pools[..threads].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bf16 product of both tiny architectures on the AMX path (its tiles emulated in
    /// software where the CPU has none) agrees with the `vdpbf16ps` path: the same bf16
    /// operands summed in f32, so only the order of the sums differs. This covers each call
    /// site (linear layers, attention's score and value products, convolutions, Winograd),
    /// not only the matrix multiply the GEMM-level test checks.
    #[test]
    fn every_bf16_product_agrees_on_the_amx_path() {
        if !bf16::supported() {
            eprintln!("no AVX512-BF16 on this CPU: the AMX path is not compared");
            return;
        }
        // The fixtures' tiny architectures (tests/fixtures/tiny-models.yml; not read through
        // the loader, which sits above this engine).
        use crate::models::VisionLayers;
        let tiny = |vision_layers, vision_width, vision_patch_size| Config {
            embed_dim: 32,
            image_resolution: 64,
            vision_layers,
            vision_width,
            vision_patch_size,
            context_length: 77,
            vocab_size: 49408,
            transformer_width: 32,
            transformer_heads: 2,
            transformer_layers: 10,
            family: Default::default(),
            activation: Default::default(),
            vision_heads: None,
            vision_mlp_width: None,
            vision_layer_scale: false,
            vision_attn_pool: None,
            coca_decoder: None,
            vision_timm: None,
            siglip: None,
            hf_text: None,
            vision_eva: None,
            clipa: None,
            text_eos: None,
            text_no_causal_mask: false,
            vision_fastvit: None,
        };
        for (name, cfg) in [
            (
                "tiny-RN",
                tiny(VisionLayers::ResNet(vec![1, 2, 1, 1]), 8, None),
            ),
            ("tiny-ViT", tiny(VisionLayers::Vit(10), 64, Some(16))),
        ] {
            let cfg = &cfg;
            let opts = |amx: bool| {
                let mut o = NativeOptions::default().with_bf16(true);
                o.gemm.amx = amx;
                o
            };
            let vb = crate::synth::random_vb(7);
            let avx = PyramidClip::new(cfg, vb.clone(), opts(false)).unwrap();
            let amx = PyramidClip::new(cfg, vb, opts(true)).unwrap();
            let n = cfg.image_resolution;
            let mut st = 0x9e37_79b9u32;
            let px: Vec<f32> = (0..3 * 3 * n * n)
                .map(|_| {
                    st = st.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (st >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
                })
                .collect();
            let px = Tensor::from_vec(px, (3, 3, n, n), &Device::Cpu).unwrap();
            let ids: Vec<u32> = (0..2 * cfg.context_length)
                .map(|i| {
                    if i % cfg.context_length == 9 {
                        49407
                    } else {
                        320 + i as u32 % 900
                    }
                })
                .collect();
            let tok = Tensor::from_vec(ids, (2, cfg.context_length), &Device::Cpu).unwrap();
            // Small products can sum in the same order on both paths, so a single row may
            // match to the bit; the model's outputs as a whole must not.
            let mut differs = false;
            for (what, a, b) in [
                ("image", avx.encode_image(&px), amx.encode_image(&px)),
                ("text", avx.encode_text(&tok), amx.encode_text(&tok)),
            ] {
                let (a, b): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
                    (a.unwrap().to_vec2().unwrap(), b.unwrap().to_vec2().unwrap());
                differs |= a != b;
                for (x, y) in a.iter().zip(&b) {
                    let dot: f64 = x.iter().zip(y).map(|(p, q)| (p * q) as f64).sum();
                    let nx: f64 = x.iter().map(|p| (p * p) as f64).sum::<f64>().sqrt();
                    let ny: f64 = y.iter().map(|p| (p * p) as f64).sum::<f64>().sqrt();
                    let cos = dot / (nx * ny);
                    assert!(cos > 0.99999, "{name} {what}: cosine {cos}");
                }
            }
            assert!(differs, "{name}: the AMX path did not run");
        }
    }
}
