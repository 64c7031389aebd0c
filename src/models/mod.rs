//! The PyramidCLIP model: one image encoder (ViT or ModifiedResNet) and the text encoder.

pub mod config;
pub mod nhwc;
pub mod nn;
pub mod ops;
pub mod resnet;
pub mod sgemm;
pub mod text;
pub mod transformer;
pub mod vit;
pub mod winograd;

pub use config::{Config, Registry, VisionLayers};

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, Clone)]
pub enum ImageEncoder {
    Vit(vit::VisionTransformer),
    ResNet(resnet::ModifiedResNet),
}

impl Module for ImageEncoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Vit(m) => m.forward(x),
            Self::ResNet(m) => m.forward(x),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PyramidClip {
    pub visual: ImageEncoder,
    pub text: text::TextEncoder,
    pub config: Config,
}

impl PyramidClip {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let visual = if cfg.is_vit() {
            ImageEncoder::Vit(vit::VisionTransformer::new(cfg, vb.pp("visual"))?)
        } else {
            ImageEncoder::ResNet(resnet::ModifiedResNet::new(cfg, vb.pp("visual"))?)
        };
        let text = text::TextEncoder::new(cfg, vb.clone())?;
        Ok(Self {
            visual,
            text,
            config: cfg.clone(),
        })
    }

    /// `pixels`: `[N, 3, R, R]` normalised images -> `[N, embed_dim]` raw features.
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        split_batch(pixels, |x| self.visual.forward(x))
    }

    /// `tokens`: `[N, context_length]` ids -> `[N, embed_dim]` raw features.
    pub fn encode_text(&self, tokens: &Tensor) -> Result<Tensor> {
        split_batch(tokens, |x| self.text.forward(x))
    }

    pub fn encode_image_normalized(&self, pixels: &Tensor) -> Result<Tensor> {
        nn::l2_normalize(&self.encode_image(pixels)?)
    }

    pub fn encode_text_normalized(&self, tokens: &Tensor) -> Result<Tensor> {
        nn::l2_normalize(&self.encode_text(tokens)?)
    }
}

/// Fewest items a thread gets when a CPU batch is split between the threads: below this a
/// thread's products have too few rows to fill the register tiles.
const MIN_PER_THREAD: usize = 4;

/// Runs `f` on a CPU batch as one slice per thread, each slice computed serially on its own
/// single-thread pool; the items left over (fewer than one per thread) go through `f` on all
/// threads. The threads then never wait for each other inside a layer (the ends of products,
/// LayerNorm, softmax); at batch 16 on 2 threads: text +2.5%, ViT-B-32 +1%, RN50 +6%. (Nesting
/// the slices in the global pool instead was slower: stolen tasks chained the waits.) Every
/// item's features are bit-identical either way: no kernel mixes rows of different items, a
/// product's summation order depends on its depth only, and edge tiles share the full tiles'
/// arithmetic. `PYRAMIDCLIP_SPLIT=0` turns it off.
fn split_batch<F>(x: &Tensor, f: F) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor> + Sync,
{
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("PYRAMIDCLIP_SPLIT").as_deref() != Ok("0"));
    let n = x.dim(0)?;
    let threads = rayon::current_num_threads();
    let per = n / threads.max(1);
    if !enabled || !x.device().is_cpu() || threads < 2 || per < MIN_PER_THREAD {
        return f(x);
    }
    let pools = serial_pools(threads)?;
    let mut outs = std::thread::scope(|scope| {
        let handles: Vec<_> = pools
            .iter()
            .enumerate()
            .map(|(t, pool)| {
                let f = &f;
                scope.spawn(move || pool.install(|| f(&x.narrow(0, t * per, per)?)))
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
    if n > per * threads {
        outs.push(f(&x.narrow(0, per * threads, n - per * threads)?)?);
    }
    Tensor::cat(&outs, 0)
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
