//! Which engine runs a model, decided once when the model is built: `native` (our own fp32 CPU
//! kernels) or `candle` (candle tensor ops on any device and dtype). A built model runs only its
//! engine's code; nothing falls back layer by layer.

use crate::device::Precision;
use crate::models::{self, Config};
use crate::native::{self, NativeOptions};
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

/// What `--engine` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineChoice {
    /// `native` for the CPU in fp32, bf16 and amp, `candle` otherwise.
    #[default]
    Auto,
    /// Our own CPU kernels (CPU; fp32, bf16 and amp).
    Native,
    /// candle tensor ops (any device, any precision).
    Candle,
}

/// The engine a model was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Native,
    Candle,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Native => "native",
            Engine::Candle => "candle",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--engine native runs on the CPU only (asked for --device {device}); use --engine candle or auto")]
    NativeDevice { device: String },
    #[error("--engine native computes in fp32 or bf16 (asked for --precision {precision}); use --engine candle or auto")]
    NativePrecision { precision: &'static str },
}

/// The engine and compute dtype for a device and precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub engine: Engine,
    pub dtype: DType,
    /// What is computed.
    pub precision: Precision,
    /// What `--precision` asked for (differs when bf16 fell back to fp32).
    pub requested: Precision,
    /// The native bf16 products' kernel (`amx` or `avx512bf16`), set when the model is built.
    pub bf16_kernel: Option<&'static str>,
}

/// `amp` is fp16 matrix products with LayerNorm, softmax and the final normalisation in f32,
/// which is how the candle engine computes every reduced precision.
pub fn dtype_of(p: Precision) -> DType {
    match p {
        Precision::Fp32 => DType::F32,
        Precision::Fp16 | Precision::Amp => DType::F16,
        Precision::Bf16 => DType::BF16,
    }
}

/// The device to open for `--device` under `--engine`: `native` runs on the CPU, so `auto`
/// means the CPU there and a GPU is an error naming `--engine` (before any GPU is opened).
pub fn device_for(
    choice: EngineChoice,
    spec: crate::device::DeviceSpec,
) -> std::result::Result<crate::device::DeviceSpec, Error> {
    use crate::device::DeviceSpec;
    match (choice, spec) {
        (EngineChoice::Native, DeviceSpec::Auto) => Ok(DeviceSpec::Cpu),
        (EngineChoice::Native, DeviceSpec::Cuda(_)) => Err(Error::NativeDevice {
            device: spec.to_string(),
        }),
        _ => Ok(spec),
    }
}

/// `f32`, `f16`, `bf16` (for logs and outputs).
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        _ => "other",
    }
}

/// Picks the engine: `auto` is `native` for the CPU in fp32, bf16 and amp (bf16 weight
/// products through AVX512-BF16; fp32, said so, where the CPU lacks it) and `candle` otherwise;
/// asking `native` for a GPU or fp16 is an error naming the flag.
/// `bf16_kernels`: whether the native bf16 products may run (the CPU has them and they are not
/// switched off).
pub fn plan(
    choice: EngineChoice,
    device: &Device,
    precision: Precision,
    bf16_kernels: bool,
) -> std::result::Result<Plan, Error> {
    let bf16_like = matches!(precision, Precision::Bf16 | Precision::Amp);
    let native_fits = device.is_cpu() && (precision == Precision::Fp32 || bf16_like);
    let engine = match choice {
        EngineChoice::Native if !device.is_cpu() => {
            return Err(Error::NativeDevice {
                device: crate::device::describe(device),
            })
        }
        EngineChoice::Native if !native_fits => {
            return Err(Error::NativePrecision {
                precision: precision.name(),
            })
        }
        EngineChoice::Native => Engine::Native,
        EngineChoice::Auto if native_fits => Engine::Native,
        EngineChoice::Auto | EngineChoice::Candle => Engine::Candle,
    };
    if engine == Engine::Native && bf16_like {
        return Ok(if bf16_kernels {
            Plan {
                engine,
                dtype: DType::BF16,
                precision,
                requested: precision,
                bf16_kernel: None,
            }
        } else {
            Plan {
                engine,
                dtype: DType::F32,
                precision: Precision::Fp32,
                requested: precision,
                bf16_kernel: None,
            }
        });
    }
    Ok(Plan {
        engine,
        dtype: dtype_of(precision),
        precision,
        requested: precision,
        bf16_kernel: None,
    })
}

/// A model built for one engine.
#[derive(Debug)]
pub enum Model {
    // Boxed: both are large structs, built once per run.
    Native(Box<native::PyramidClip>),
    Candle(Box<models::PyramidClip>),
}

impl Model {
    /// Builds `cfg` from `vb` for `engine`. For the native engine `vb` must be an f32 CPU
    /// builder; for candle it carries the compute dtype and device.
    pub fn new(
        cfg: &Config,
        vb: VarBuilder,
        engine: Engine,
        options: NativeOptions,
    ) -> Result<Self> {
        Ok(match engine {
            Engine::Native => Model::Native(Box::new(native::PyramidClip::new(cfg, vb, options)?)),
            Engine::Candle => Model::Candle(Box::new(models::PyramidClip::new(cfg, vb)?)),
        })
    }

    pub fn engine(&self) -> Engine {
        match self {
            Model::Native(_) => Engine::Native,
            Model::Candle(_) => Engine::Candle,
        }
    }

    /// `pixels`: `[N, 3, R, R]` normalised images in the compute dtype -> `[N, embed_dim]` raw.
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        match self {
            Model::Native(m) => m.encode_image(pixels),
            Model::Candle(m) => m.encode_image(pixels),
        }
    }

    /// `tokens`: `[N, context_length]` ids -> `[N, embed_dim]` raw features.
    pub fn encode_text(&self, tokens: &Tensor) -> Result<Tensor> {
        match self {
            Model::Native(m) => m.encode_text(tokens),
            Model::Candle(m) => m.encode_text(tokens),
        }
    }

    /// CoCa: raw image features and the tokens its captioning decoder attends to, `[N,
    /// queries - 1, embed_dim]`.
    pub fn encode_image_with_tokens(&self, pixels: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            Model::Native(m) => m.encode_image_with_tokens(pixels),
            Model::Candle(m) => m.encode_image_with_tokens(pixels),
        }
    }

    /// CoCa: the text tower's rows at each caption's positions but the last, before
    /// `ln_final`, `[N, context_length - 1, width]`: what its captioning decoder reads.
    pub fn caption_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        match self {
            Model::Native(m) => m.caption_tokens(tokens),
            Model::Candle(m) => m.caption_tokens(tokens),
        }
    }

    /// CoCa: the same rows at every position of generated prefixes `[N, t]`, `[N, t,
    /// width]`: what its decoder reads to predict each prefix's next id.
    pub fn prefix_tokens(&self, tokens: &Tensor) -> Result<Tensor> {
        match self {
            Model::Native(m) => m.prefix_tokens(tokens),
            Model::Candle(m) => m.prefix_tokens(tokens),
        }
    }

    /// L2-normalised image features, in f32.
    pub fn encode_image_normalized(&self, pixels: &Tensor) -> Result<Tensor> {
        models::nn::l2_normalize(&self.encode_image(pixels)?)
    }

    /// L2-normalised text features, in f32.
    pub fn encode_text_normalized(&self, tokens: &Tensor) -> Result<Tensor> {
        models::nn::l2_normalize(&self.encode_text(tokens)?)
    }
}

/// CoCa's captioning decoder, built for the engine its model runs on.
#[derive(Debug)]
pub enum Decoder {
    Native(Box<native::coca::TextDecoder>),
    Candle(Box<models::coca::TextDecoder>),
}

impl Decoder {
    /// Builds the decoder of `cfg` from `vb` (the checkpoint's `text_decoder.` keys) as
    /// [`Model::new`] builds a model.
    pub fn new(
        cfg: &Config,
        vb: VarBuilder,
        engine: Engine,
        options: NativeOptions,
    ) -> Result<Self> {
        Ok(match engine {
            Engine::Native => Decoder::Native(Box::new(native::coca::TextDecoder::new(
                cfg,
                vb,
                options.gemm,
            )?)),
            Engine::Candle => Decoder::Candle(Box::new(models::coca::TextDecoder::new(cfg, vb)?)),
        })
    }

    /// Each caption's mean cross-entropy of predicting `labels` `[N, L]` from its token rows
    /// `text` `[N, L, D]` and its image's tokens `image` `[N, Lk, D]`.
    pub fn row_losses(&self, image: &Tensor, text: &Tensor, labels: &Tensor) -> Result<Vec<f32>> {
        let (n, lq, _) = text.dims3()?;
        match self {
            Decoder::Native(d) => {
                let (lk, labels) = (image.dim(1)?, native::host_u32(labels)?);
                let (image, text) = (native::host_f32(image)?, native::host_f32(text)?);
                d.row_losses(&image, lk, text, n, lq, &labels)
            }
            Decoder::Candle(d) => {
                let logits = d.forward(image, text)?;
                let labels = labels.to_device(logits.device())?;
                models::coca::row_losses(&logits, &labels)?
                    .to_device(&Device::Cpu)?
                    .to_vec1::<f32>()
            }
        }
    }
}

/// What a decoder keeps of a batch of images while their captions are generated: the keys
/// and values of every cross-attention layer, computed once.
#[derive(Debug)]
pub enum ImageMemory {
    Native(native::coca::ImageKeys),
    Candle(models::coca::ImageKeys),
}

/// What generation keeps from one step to the next: the keys and values of the text tower's
/// and the decoder's self-attention blocks at the prefixes' positions, so that a step
/// computes only its new position; candle's also the image keys of the last step's beams.
#[derive(Debug, Default)]
pub struct StepCache {
    text: native::transformer::KvCache,
    decoder: native::transformer::KvCache,
    candle_text: models::transformer::KvCache,
    candle_decoder: models::transformer::KvCache,
    candle_images: Option<(Vec<usize>, models::coca::ImageKeys)>,
}

/// One generation step's prefixes: `ids` `[n * t]`, prefix i of image `of[i]`, extending
/// prefix `parent[i]` of the last step (no parents at the first).
#[derive(Debug, Clone, Copy)]
pub struct Prefixes<'a> {
    pub ids: &'a [u32],
    pub t: usize,
    pub of: &'a [usize],
    pub parent: &'a [usize],
}

impl Decoder {
    /// Prepares the images' tokens `[N, Lk, D]` for [`Decoder::next_logits`].
    pub fn remember(&self, image: &Tensor) -> Result<ImageMemory> {
        Ok(match self {
            Decoder::Native(d) => {
                let (n, lk, _) = image.dims3()?;
                ImageMemory::Native(d.image_keys(&native::host_f32(image)?, n, lk)?)
            }
            Decoder::Candle(d) => ImageMemory::Candle(d.image_keys(image)?),
        })
    }

    /// The f32 logits of the id after each prefix, `[N * vocab]`: `text` the prefixes' token
    /// rows `[N, t, D]` ([`Model::prefix_tokens`]), prefix i of image `of[i]` of `memory`.
    pub fn next_logits(
        &self,
        memory: &ImageMemory,
        of: &[usize],
        text: &Tensor,
    ) -> Result<Vec<f32>> {
        match (self, memory) {
            (Decoder::Native(d), ImageMemory::Native(keys)) => {
                let t = text.dim(1)?;
                d.next_logits(keys, of, native::host_f32(text)?, t)
            }
            (Decoder::Candle(d), ImageMemory::Candle(keys)) => {
                let keys = keys.select(of)?;
                let text = text.to_device(&keys.device())?;
                host_rows(d.next_logits(&keys, &text)?)
            }
            _ => candle_core::bail!("images remembered by another engine's decoder"),
        }
    }

    /// The f32 logits of the id after each of a step's prefixes, `[N * vocab]`, as
    /// [`Model::prefix_tokens`] then [`Decoder::next_logits`] give them, from the new
    /// position only, its earlier ones' keys and values read from `cache` (the native
    /// engine's the same logits to the bit).
    pub fn step_logits(
        &self,
        model: &Model,
        memory: &ImageMemory,
        cache: &mut StepCache,
        p: Prefixes,
    ) -> Result<Vec<f32>> {
        let n = p.of.len();
        match (self, model, memory) {
            (Decoder::Native(d), Model::Native(m), ImageMemory::Native(keys)) => {
                let text = m.prefix_step(p.ids, n, p.t, &mut cache.text, p.parent)?;
                d.step_logits(keys, p.of, text, &mut cache.decoder, p.parent)
            }
            (Decoder::Candle(d), Model::Candle(m), ImageMemory::Candle(keys)) => {
                let text = m.prefix_step(p.ids, n, p.t, &mut cache.candle_text, p.parent)?;
                // The beams' images change only when an image's captions are done.
                let kept = matches!(&cache.candle_images, Some((of, _)) if of == p.of);
                if !kept {
                    cache.candle_images = Some((p.of.to_vec(), keys.select(p.of)?));
                }
                let Some((_, keys)) = &cache.candle_images else {
                    unreachable!("selected above")
                };
                host_rows(d.step_logits(keys, &text, &mut cache.candle_decoder, p.parent)?)
            }
            _ => candle_core::bail!("a decoder, model and images of different engines"),
        }
    }
}

/// Logits `[N, vocab]` on the host, flat.
fn host_rows(logits: Tensor) -> Result<Vec<f32>> {
    logits
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generation through the engine's step (`models::coca::testing::STEPS`: the text
    /// tower's and decoder's keys and values cached, candle's image keys kept while the
    /// beams' images stay) gives what each engine's full prefixes give: the native engine's
    /// to the bit, candle's within 1e-5 of the largest; an image dropped between steps,
    /// beams reordered.
    #[test]
    fn step_logits_equal_prefix_tokens_then_next_logits_on_both_engines() {
        use crate::models::coca::testing;
        let cfg = testing::tiny_coca();
        let cpu = Device::Cpu;
        let res = cfg.image_resolution;
        let pixels = Tensor::randn(0f32, 1.0, (3, 3, res, res), &cpu).unwrap();
        for engine in [Engine::Native, Engine::Candle] {
            let vb = crate::synth::random_vb(3);
            let options = NativeOptions::default();
            let model = Model::new(&cfg, vb.clone(), engine, options).unwrap();
            let decoder = Decoder::new(&cfg, vb.pp("text_decoder"), engine, options).unwrap();
            let (_, tokens) = model.encode_image_with_tokens(&pixels).unwrap();
            let memory = decoder.remember(&tokens).unwrap();
            let mut cache = StepCache::default();
            for (i, flat) in testing::prefixes().into_iter().enumerate() {
                let (t, (of, parent, _)) = (i + 1, testing::STEPS[i]);
                let rows = Tensor::from_vec(flat.clone(), (of.len(), t), &cpu).unwrap();
                let text = model.prefix_tokens(&rows).unwrap();
                let want = decoder.next_logits(&memory, of, &text).unwrap();
                let p = Prefixes {
                    ids: &flat,
                    t,
                    of,
                    parent,
                };
                let got = decoder.step_logits(&model, &memory, &mut cache, p).unwrap();
                assert_eq!(got.len(), want.len());
                let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let tol = match engine {
                    Engine::Native => 0.0,
                    Engine::Candle => 1e-5 * top,
                };
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= tol, "{engine:?} step {t}: {g} vs {w}");
                }
            }
        }
    }

    /// candle's stepwise generation (`models::coca::testing::STEPS`: the text tower's and
    /// decoder's keys and values cached, beams reordered and repeated, an image dropped, a
    /// pad id inside a prefix) gives the recomputed prefixes' logits: in bf16 to the bit on
    /// the CPU, in f32 within 6e-7 of the largest (candle's CPU products of one query row sum
    /// in another order than those of many).
    #[test]
    fn candle_step_logits_equal_the_recomputed_prefixes() {
        use crate::models::coca::{testing, TextDecoder};
        use crate::models::text::TextEncoder;
        use crate::models::transformer::KvCache;
        use crate::synth::random_weights;
        let cfg = testing::tiny_coca();
        let (w, lk) = (cfg.embed_dim, 5);
        let cpu = Device::Cpu;
        for dt in [DType::F32, DType::BF16] {
            let vb = random_weights(7, dt, &cpu);
            let text = TextEncoder::new(&cfg, vb.pp("text")).unwrap();
            let dec = TextDecoder::new(&cfg, vb.pp("text_decoder")).unwrap();
            let image = Tensor::randn(0f32, 1.0, (3, lk, w), &cpu).unwrap();
            let keys = dec.image_keys(&image).unwrap();
            let (mut cache_t, mut cache_d) = (KvCache::default(), KvCache::default());
            for (i, flat) in testing::prefixes().into_iter().enumerate() {
                let (t, (of, parent, _)) = (i + 1, testing::STEPS[i]);
                let n = of.len();
                let selected = keys.select(of).unwrap();
                let rows = text
                    .prefix_tokens(&Tensor::from_vec(flat.clone(), (n, t), &cpu).unwrap())
                    .unwrap();
                let want = dec.next_logits(&selected, &rows).unwrap();
                let row = text.prefix_step(&flat, n, t, &mut cache_t, parent).unwrap();
                let got = dec
                    .step_logits(&selected, &row, &mut cache_d, parent)
                    .unwrap();
                let max = |x: Tensor| x.abs()?.max_all()?.to_scalar::<f32>();
                let diff = max((got - &want).unwrap()).unwrap();
                let scale = max(want).unwrap();
                assert!(diff <= 1e-5 * scale, "step {t}, {dt:?}: {diff} of {scale}");
                assert_eq!((cache_t.len(), cache_d.len()), (t, t));
            }
            // A step that skips a position, or parents out of range, is refused; the latter
            // leaves the cache as it was.
            let ids = vec![1u32; 4 * 7];
            assert!(text.prefix_step(&ids, 4, 7, &mut cache_t, &[0; 4]).is_err());
            let row = Tensor::zeros((4, 1, w), DType::F32, &cpu).unwrap();
            let selected = keys.select(&[0, 0, 2, 2]).unwrap();
            let e = dec.step_logits(&selected, &row, &mut cache_d, &[0, 1, 2, 9]);
            assert!(e.is_err());
            assert_eq!(cache_d.len(), 5);
        }
    }

    #[test]
    fn auto_picks_native_for_cpu_fp32_and_bf16() {
        let cpu = Device::Cpu;
        let p = plan(EngineChoice::Auto, &cpu, Precision::Fp32, true).unwrap();
        assert_eq!((p.engine, p.dtype), (Engine::Native, DType::F32));
        // bf16 on the CPU: the native bf16 kernels, or fp32 said so where there are none.
        let p = plan(EngineChoice::Auto, &cpu, Precision::Bf16, true).unwrap();
        assert_eq!(
            (p.engine, p.dtype, p.precision),
            (Engine::Native, DType::BF16, Precision::Bf16)
        );
        let p = plan(EngineChoice::Auto, &cpu, Precision::Bf16, false).unwrap();
        assert_eq!(
            (p.engine, p.dtype, p.precision, p.requested),
            (Engine::Native, DType::F32, Precision::Fp32, Precision::Bf16)
        );
        let p = plan(EngineChoice::Candle, &cpu, Precision::Bf16, true).unwrap();
        assert_eq!((p.engine, p.dtype), (Engine::Candle, DType::BF16));
        let p = plan(EngineChoice::Candle, &cpu, Precision::Amp, true).unwrap();
        assert_eq!((p.engine, p.dtype), (Engine::Candle, DType::F16));
        let p = plan(EngineChoice::Auto, &cpu, Precision::Fp16, true).unwrap();
        assert_eq!((p.engine, p.dtype), (Engine::Candle, DType::F16));
        let e = plan(EngineChoice::Native, &cpu, Precision::Fp16, true).unwrap_err();
        assert!(e.to_string().contains("--engine native"), "{e}");
        assert!(e.to_string().contains("--precision fp16"), "{e}");
        use crate::device::DeviceSpec;
        let e = device_for(EngineChoice::Native, DeviceSpec::Cuda(Some(1))).unwrap_err();
        assert!(e.to_string().contains("--engine native") && e.to_string().contains("cuda:1"));
        assert_eq!(
            device_for(EngineChoice::Native, DeviceSpec::Auto).unwrap(),
            DeviceSpec::Cpu
        );
        assert_eq!(
            device_for(EngineChoice::Candle, DeviceSpec::Auto).unwrap(),
            DeviceSpec::Auto
        );
    }
}
