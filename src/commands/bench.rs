//! `pyramidclip bench`: throughput of the encoders, of the matrix multiply, of preprocessing
//! and of the whole pipeline, with random weights unless a checkpoint is given.

use super::{exit, fail};
use crate::cli::{BenchArgs, BenchWhat};
use crate::engine::{self, Model};
use crate::models::{Config, VisionLayers};
use crate::native::weight::Weight;
use crate::native::{gemm, simd};
use crate::report::Log;
use crate::tune;
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

/// Multiply-adds x 2 of one image through the image encoder.
pub fn image_flops(cfg: &Config) -> f64 {
    if let Some(f) = &cfg.vision_fastvit {
        // FastViT with its branches folded: the stem (3x3 / 2, depthwise 3x3 / 2, 1x1), each
        // stage's grouped 7x7 / 2 and 1x1 downsampling, positional encoding (depthwise 7x7),
        // blocks (RepMixer's depthwise 3x3 or attention, the depthwise 7x7 and the MLP), the
        // final grouped 3x3 to twice the width, `head.fc`; SE's few products left out.
        let mut g = cfg.image_resolution as f64 / 2.0;
        let d0 = f.dims[0] as f64;
        let mut fl = g * g * 27.0 * d0 * 2.0;
        g /= 2.0;
        fl += g * g * (9.0 * d0 + d0 * d0) * 2.0;
        for (i, (&depth, &d)) in f.depths.iter().zip(&f.dims).enumerate() {
            let d = d as f64;
            if i > 0 {
                g = (g / 2.0).ceil();
                fl += g * g * (49.0 * d + d * d) * 2.0;
            }
            let l = g * g;
            let mlp = l * (49.0 * d + 2.0 * d * d * f.mlp_ratio as f64) * 2.0;
            let mixer = if f.attention[i] {
                l * 4.0 * d * d * 2.0 + 2.0 * l * l * d * 2.0
            } else {
                l * 9.0 * d * 2.0
            };
            fl += f64::from(u8::from(f.attention[i])) * l * 49.0 * d * 2.0;
            fl += depth as f64 * (mixer + mlp);
        }
        let last = *f.dims.last().unwrap_or(&0) as f64;
        return fl + g * g * 9.0 * 2.0 * last * 2.0 + 2.0 * last * cfg.embed_dim as f64 * 2.0;
    }
    if let Some(t) = &cfg.vision_timm {
        // ConvNeXt: the 4x4 stem, each stage's 2x2 downsampling and blocks (7x7 depthwise,
        // the 4x MLP), the projection.
        let mut g = (cfg.image_resolution / 4) as f64;
        let d = |i: usize| t.dims[i] as f64;
        let mut f = g * g * 48.0 * d(0) * 2.0;
        for (i, &depth) in t.depths.iter().enumerate() {
            if i > 0 {
                g /= 2.0;
                f += g * g * 4.0 * d(i - 1) * d(i) * 2.0;
            }
            f += depth as f64 * g * g * (49.0 * d(i) + 8.0 * d(i) * d(i)) * 2.0;
        }
        let e = cfg.embed_dim as f64;
        return f + match t.proj {
            crate::models::config::TimmProj::Linear => d(3) * e * 2.0,
            crate::models::config::TimmProj::Mlp => (d(3) * 2.0 * e + 2.0 * e * e) * 2.0,
        };
    }
    match &cfg.vision_layers {
        VisionLayers::Vit(layers) => {
            let p = cfg.vision_patch_size.unwrap_or(1) as f64;
            let w = cfg.vision_width as f64;
            let g = (cfg.image_resolution as f64 / p).floor();
            let cls = cfg.vision_eva.as_ref().is_none_or(|e| e.class_token);
            let l = g * g + f64::from(u8::from(cls));
            let patch = match &cfg.vision_eva {
                Some(e) if e.mbconv.is_some() => {
                    let m = e.mbconv.as_ref().expect("checked");
                    vitamin_stem_flops(m, cfg.image_resolution as f64, w)
                }
                // MobileCLIP-B's stem: 4x4 / 4 to w / 4, 2x2 / 2 to w / 4, 2x2 / 2 to w.
                Some(e) if e.conv_stem => {
                    let q = w / 4.0;
                    (16.0 * g * g * 48.0 * q + 4.0 * g * g * 4.0 * q * q + g * g * 4.0 * q * w)
                        * 2.0
                }
                _ => g * g * 3.0 * p * p * w * 2.0,
            };
            // The MLP: two products of its hidden width (open_clip's `mlp_ratio`), three for
            // EVA02's SwiGLU.
            let hidden = cfg.vision_mlp_width.unwrap_or(4 * cfg.vision_width) as f64;
            let mats = match &cfg.vision_eva {
                Some(e) if e.swiglu || e.geglu => 3.0,
                _ => 2.0,
            };
            let mlp = l * mats * w * hidden * 2.0;
            let block = l * 4.0 * w * w * 2.0 + 2.0 * l * l * w * 2.0 + mlp;
            let e = cfg.embed_dim as f64;
            // CoCa's pooler: keys and values of every token, one query, out_proj; its `proj`
            // is embed_dim square.
            let head = match cfg.vision_attn_pool {
                Some(_) => l * w * 2.0 * e * 2.0 + 2.0 * l * e * 2.0 + 2.0 * e * e * 2.0,
                None => w * e * 2.0,
            };
            patch + *layers as f64 * block + head
        }
        VisionLayers::ResNet(depths) => {
            let mut f = 0.0;
            let conv = |h: f64, cin: f64, cout: f64, k: f64| h * h * cin * cout * k * k * 2.0;
            let w = cfg.vision_width as f64;
            let mut h = cfg.image_resolution as f64 / 2.0;
            f += conv(h, 3.0, w / 2.0, 3.0)
                + conv(h, w / 2.0, w / 2.0, 3.0)
                + conv(h, w / 2.0, w, 3.0);
            h /= 2.0;
            let mut inp = w;
            for (i, &d) in depths.iter().enumerate() {
                let planes = w * (1 << i) as f64;
                for b in 0..d {
                    let stride = if i > 0 && b == 0 { 2.0 } else { 1.0 };
                    f += conv(h, inp, planes, 1.0) + conv(h, planes, planes, 3.0);
                    let ho = h / stride;
                    f += conv(ho, planes, planes * 4.0, 1.0);
                    if b == 0 {
                        f += conv(ho, inp, planes * 4.0, 1.0);
                    }
                    h = ho;
                    inp = planes * 4.0;
                }
            }
            let e = w * 32.0;
            let l = h * h + 1.0;
            f + l * 2.0 * e * e * 2.0 + e * e * 2.0 * 2.0 + 2.0 * l * e * 2.0
        }
    }
}

/// FLOPs of ViTamin's convolutional stages for one `r`-pixel image into `w` channels: the
/// stem's two 3x3 convs, each MBConv block's 1x1 expansion, depthwise 3x3 and 1x1 projection
/// (the first of a stage at stride 2, with the shortcut's 1x1 where the width changes), the
/// final 3x3 / 2 conv.
fn vitamin_stem_flops(m: &crate::models::config::MbConvStages, r: f64, w: f64) -> f64 {
    let s = m.stem as f64;
    let mut h = (r / 2.0).ceil();
    let mut f = h * h * (27.0 * s + 9.0 * s * s) * 2.0;
    let mut c_in = s;
    for (&c, &depth) in m.widths.iter().zip(&m.depths) {
        let c = c as f64;
        let mid = crate::models::vitamin::expanded(c as usize) as f64;
        for d in 0..depth {
            let hi = h;
            if d == 0 {
                h = (h / 2.0).ceil();
                if c_in != c {
                    f += h * h * c_in * c * 2.0;
                }
            }
            f += (hi * hi * c_in * mid + h * h * (9.0 * mid + mid * c)) * 2.0;
            c_in = c;
        }
    }
    let g = (h / 2.0).ceil();
    f + g * g * 9.0 * c_in * w * 2.0
}

/// FLOPs of one prompt through the text tower over `positions` positions; with
/// `last_at_eot`, the last block computes only the end-of-text row's query, attention and MLP
/// (keys and values at every position), as the native engine does for CLIP towers.
pub fn text_flops(cfg: &Config, positions: usize, last_at_eot: bool) -> f64 {
    let w = cfg.transformer_width as f64;
    let l = positions as f64;
    // q, out_proj and the MLP per query row (10 w^2), k and v per key (2 w^2), the two
    // attention products per query and key (2 w), each multiply-add 2 FLOPs.
    let block = |rows: f64| (rows * 10.0 * w * w + l * 2.0 * w * w + 2.0 * rows * l * w) * 2.0;
    let layers = cfg.transformer_layers as f64;
    let body = if last_at_eot && layers >= 1.0 {
        (layers - 1.0) * block(l) + block(1.0)
    } else {
        layers * block(l)
    };
    body + w * cfg.embed_dim as f64 * 2.0
}

/// FLOPs of `n` prompts whose first `shared` positions went through the tower once (the
/// native engine's shared prefix): [`text_flops`] each, less the saved rows' per-row work in
/// every block that computes all positions.
pub fn text_batch_flops(
    cfg: &Config,
    n: usize,
    positions: usize,
    last_at_eot: bool,
    shared: usize,
) -> f64 {
    let w = cfg.transformer_width as f64;
    let l = positions as f64;
    let layers = cfg.transformer_layers as f64;
    let full_layers = if last_at_eot && layers >= 1.0 {
        layers - 1.0
    } else {
        layers
    };
    let per_row = (12.0 * w * w + 2.0 * l * w) * 2.0;
    let saved = n.saturating_sub(1) as f64 * shared as f64 * per_row * full_layers;
    n as f64 * text_flops(cfg, positions, last_at_eot) - saved
}

/// Iterations, their total seconds and the fastest one's: the mean is the throughput; the
/// fastest iteration is what the cores reached undisturbed (on a shared VM the mean also
/// measures the neighbours), to set against the peak, which is a best window too. With
/// windows, each iteration's seconds with the peaks measured right after it (see
/// [`Timing::paired_share`]).
struct Timing {
    iters: usize,
    secs: f64,
    best: f64,
    paired: Vec<(f64, Window)>,
}

/// The peaks of one short window: the FMA peak and, in bf16, the peak of the bf16 kernel used.
#[derive(Clone, Copy)]
struct Window {
    fma: f64,
    bf16: Option<f64>,
}

impl Timing {
    fn rate(&self, per_iter: f64) -> f64 {
        per_iter * self.iters as f64 / self.secs
    }
    fn best_rate(&self, per_iter: f64) -> f64 {
        per_iter / self.best
    }
    /// The median over iterations of each one's rate (`per_iter` GFLOP) against the peak
    /// (`peak` of its window) measured right after it. A neighbour on a shared VM slows an
    /// iteration and the window beside it alike, so the ratio moves less than the mean over
    /// a peak measured once, before, whose two parts each move with what else ran then.
    fn paired_share(&self, per_iter: f64, peak: impl Fn(&Window) -> Option<f64>) -> Option<f64> {
        let mut r: Vec<f64> = self
            .paired
            .iter()
            .filter_map(|(s, w)| peak(w).filter(|p| *p > 0.0).map(|p| per_iter / s / p))
            .collect();
        if r.is_empty() {
            return None;
        }
        r.sort_by(f64::total_cmp);
        let n = r.len();
        Some(if n % 2 == 1 {
            r[n / 2]
        } else {
            (r[n / 2 - 1] + r[n / 2]) / 2.0
        })
    }
}

fn time_loop(seconds: f64, f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Timing> {
    time_loop_paired(seconds, f, None)
}

/// [`time_loop`], measuring `window` after each iteration (outside the iteration's time).
fn time_loop_paired(
    seconds: f64,
    mut f: impl FnMut() -> anyhow::Result<()>,
    mut window: Option<&mut dyn FnMut() -> Window>,
) -> anyhow::Result<Timing> {
    f()?; // warm-up
    let t = Instant::now();
    let mut timing = Timing {
        iters: 0,
        secs: 0.0,
        best: f64::INFINITY,
        paired: Vec::new(),
    };
    while timing.iters < 2 || t.elapsed().as_secs_f64() < seconds {
        let one = Instant::now();
        f()?;
        let dt = one.elapsed().as_secs_f64();
        timing.best = timing.best.min(dt);
        timing.secs += dt;
        timing.iters += 1;
        if let Some(w) = window.as_mut() {
            timing.paired.push((dt, w()));
        }
    }
    Ok(timing)
}

/// On the CPU, the FMA peak of the pool's threads, measured before the model runs (idle
/// workers still spinning after it would lower it).
fn cpu_peak(device: &Device, isa: simd::Isa, seconds: f64) -> Option<f64> {
    device
        .is_cpu()
        .then(|| fma_peak(isa, (seconds / 10.0).clamp(0.2, 1.0)))
}

/// ", N% of the FMA peak (P GFLOP/s, isa)" for the report line, by the model's FLOP count (the
/// reference's work, whatever we skip; `per_iter` GFLOP a batch) at the mean, at the fastest
/// batch and paired (each batch against the peak measured right after it, the median:
/// [`Timing::paired_share`]); records the peak and the shares in `report`.
/// In bf16 also ", N% of the bf16 peak (P GFLOP/s, kernel)" (the peak of the kernel used).
fn peak_share(
    peak: Option<f64>,
    isa: simd::Isa,
    bf16: Option<(f64, &str)>,
    t: &Timing,
    per_iter: f64,
    report: &mut serde_json::Value,
) -> String {
    let Some(peak) = peak else {
        return String::new();
    };
    let (gflops, best) = (t.rate(per_iter), t.best_rate(per_iter));
    report["fma_peak_gflops"] = peak.into();
    report["best_batch_gflops"] = best.into();
    report["peak_windows"] = t.paired.len().into();
    let mut share = |p: f64, key: &str, paired: Option<f64>| {
        report[format!("{key}_share")] = (gflops / p).into();
        let mut s = format!(
            "{:.0}% (fastest batch {:.0}%",
            100.0 * gflops / p,
            100.0 * best / p
        );
        if let Some(q) = paired {
            report[format!("{key}_share_paired")] = q.into();
            s += &format!(", paired {:.0}%", 100.0 * q);
        }
        s + ")"
    };
    let mut out = format!(
        ", {} of the FMA peak ({peak:.0} GFLOP/s, {})",
        share(peak, "fma_peak", t.paired_share(per_iter, |w| Some(w.fma))),
        isa.name()
    );
    if let Some((p, kernel)) = bf16 {
        let paired = t.paired_share(per_iter, |w| w.bf16);
        out += &format!(
            ", {} of the bf16 peak ({p:.0} GFLOP/s, {kernel})",
            share(p, "bf16_peak", paired)
        );
    }
    out
}

/// One short window of the peaks ([`Window`]) after a batch: the FMA peak and, with `bf16`
/// (`Some(amx)`), the peak of the bf16 kernel the model runs on.
fn peak_window(isa: simd::Isa, bf16: Option<bool>) -> Window {
    // ~15 ms each (3-5% of a batch of the encoders at batch 16 on 2 cores), every thread
    // timing its own bursts, so no synchronisation between bursts is counted.
    fn rate(burst: impl Fn() -> f64 + Sync) -> f64 {
        rayon::broadcast(|_| {
            let t = Instant::now();
            let mut flops = 0.0;
            while t.elapsed().as_secs_f64() < 0.015 {
                let done = burst();
                if done == 0.0 {
                    return 0.0;
                }
                flops += done;
            }
            flops / t.elapsed().as_secs_f64() / 1e9
        })
        .iter()
        .sum()
    }
    let fma = rate(|| simd::fma_burst(isa, 1 << 14));
    let bf16 = bf16.map(|amx| rate(|| bf16_burst(amx, 14)));
    Window { fma, bf16 }
}

/// GFLOP/s of independent bf16 dot products (`vdpbf16ps`, or AMX's `tdpbf16ps` with `amx`) on
/// every thread at once.
fn bf16_peak(seconds: f64, amx: bool) -> f64 {
    best_rate(seconds, || {
        rayon::broadcast(|_| bf16_burst(amx, 20)).iter().sum()
    })
}

/// FLOPs of one burst of independent bf16 dot products on this thread: `2^log2_steps`
/// `vdpbf16ps` steps, or 64 times fewer `tdpbf16ps` rounds with `amx` (each does 64 times
/// the work), so both take about as long.
fn bf16_burst(amx: bool, log2_steps: u32) -> f64 {
    if amx {
        crate::native::amx::dot_burst(1 << (log2_steps - 6))
    } else {
        crate::native::bf16::dot_burst(1 << log2_steps)
    }
}

/// GFLOP/s of independent multiply-adds on every thread of the pool at once.
fn fma_peak(isa: simd::Isa, seconds: f64) -> f64 {
    best_rate(seconds, || {
        rayon::broadcast(|_| simd::fma_burst(isa, 1 << 20))
            .iter()
            .sum()
    })
}

/// The best GFLOP/s of `burst` (which returns the FLOPs it did) over windows of about a fifth
/// of `seconds`: a peak is what the cores reach, and on a shared VM a single window also
/// measures whatever else ran.
fn best_rate(seconds: f64, mut burst: impl FnMut() -> f64) -> f64 {
    let start = std::time::Instant::now();
    let mut best = 0f64;
    while best == 0.0 || start.elapsed().as_secs_f64() < seconds {
        let t = std::time::Instant::now();
        let mut flops = 0.0;
        while flops == 0.0 || t.elapsed().as_secs_f64() < seconds / 5.0 {
            let done = burst();
            if done == 0.0 {
                return 0.0;
            }
            flops += done;
        }
        best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// GFLOP/s of `[m, k] @ [k, n]` through the native product the model would run (`cfg`: the
/// f32 kernels, or bf16 with `cfg.bf16`) and through candle's CPU matmul in the same dtype
/// (the candle engine's), same inputs, same run: each at its fastest iteration (a kernel
/// benchmark, set against the best-window peak).
fn gemm_pair(
    cfg: gemm::GemmConfig,
    m: usize,
    k: usize,
    n: usize,
    seconds: f64,
) -> anyhow::Result<(f64, f64)> {
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
        .collect();
    let bm: Vec<f32> = (0..k * n)
        .map(|i| ((i * 104_729) % 1000) as f32 * 1e-3)
        .collect();
    let packed = Weight::new(cfg, &bm, k, n, n, 1);
    let mut c = vec![0f32; m * n];
    let flops = 2.0 * (m * k * n) as f64;
    let ours = time_loop(seconds, || {
        packed.gemm(m, &a, k, 0..n, &mut c, n, &gemm::Epilogue::NONE, true);
        Ok(())
    })?;
    let dtype = if cfg.bf16 { DType::BF16 } else { DType::F32 };
    let (ta, tb) = (
        Tensor::from_vec(a, (m, k), &Device::Cpu)?.to_dtype(dtype)?,
        Tensor::from_vec(bm, (k, n), &Device::Cpu)?.to_dtype(dtype)?,
    );
    let theirs = time_loop(seconds, || {
        std::hint::black_box(ta.matmul(&tb)?);
        Ok(())
    })?;
    Ok((ours.best_rate(flops / 1e9), theirs.best_rate(flops / 1e9)))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.json };
    // The measurements are the command's output (stdout); --json replaces them.
    let json = args.json;
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    if let Some(t) = args.threads {
        std::env::set_var("RAYON_NUM_THREADS", t.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    let threads = rayon::current_num_threads();
    // A checkpoint without --visual-model is benchmarked as what it holds (detected, as the
    // other commands load it); otherwise the named preset (ViT-B-32 by default).
    let (visual_model, cfg) = match (&args.checkpoint, args.visual_model.as_deref()) {
        (Some(p), None) => {
            let reg = crate::loader::registry(args.model_config.as_deref(), None)
                .map_err(|e| fail(exit::USAGE, e.to_string()))?;
            let ck = crate::checkpoint::Checkpoint::open(p)?;
            let arch = crate::checkpoint::detect_config(&ck, &reg, None)?;
            (arch.name.unwrap_or_else(|| "custom".into()), arch.config)
        }
        (_, named) => {
            let name = named.unwrap_or("ViT-B-32");
            let cfg = super::architecture(args.model_config.as_deref(), name)?;
            (name.to_string(), cfg)
        }
    };
    let visual_model = visual_model.as_str();
    let device = super::device(&args.run, None)?;
    let (native, source) = super::native_options_and_blocking(&args.run.native, args.run.precision);
    let plan = engine::plan(
        args.run.engine,
        &device,
        args.run.precision,
        native.bf16_available(),
    )?;
    let native =
        native.with_bf16(plan.engine == engine::Engine::Native && plan.dtype == DType::BF16);
    if matches!(args.what, BenchWhat::Blocking) {
        if plan.requested != crate::device::Precision::Fp32 {
            return Err(fail(
                exit::USAGE,
                "--what blocking: tunes the fp32 products (the bf16 kernels have no blocking to tune); drop --precision",
            ));
        }
        if plan.engine != engine::Engine::Native {
            return Err(fail(
                exit::USAGE,
                "--what blocking: tunes the native engine's CPU products (--engine native, --device cpu)",
            ));
        }
    }
    let isa = native.gemm.isa;
    let dtype = plan.dtype;
    if plan.requested != plan.precision {
        log.warn(format!(
            "--precision {}: {}; the native engine computes in {}",
            plan.requested.name(),
            super::bf16_fallback_reason(&args.run.native),
            plan.precision.name()
        ));
    }
    let b = args.batch_size;
    // The model and the architecture it was built for (a checkpoint's own, which may differ
    // from the preset's: family, resolution), which the FLOP counts follow.
    let model = || -> anyhow::Result<(Model, Config)> {
        match &args.checkpoint {
            Some(p) => {
                let opts = crate::loader::LoadOptions {
                    checkpoint: p.clone(),
                    visual_model: args.visual_model.clone(),
                    model_config: args.model_config.clone(),
                    device: device.clone(),
                    precision: args.run.precision,
                    engine: args.run.engine,
                    native,
                    // The text benchmark's ids are CLIP's (see `BenchWhat::Text`).
                    tokenizer: None,
                    hub: super::hub_caches_in(None),
                };
                let loaded = crate::loader::load_weights(&opts)?;
                Ok((loaded.model, loaded.config))
            }
            None => {
                // The native engine packs from f32 weights (its bf16 rounds at packing).
                let vb_dtype = if plan.engine == engine::Engine::Native {
                    DType::F32
                } else {
                    dtype
                };
                let vb = crate::synth::random_weights(1, vb_dtype, &device);
                Ok((Model::new(&cfg, vb, plan.engine, native)?, cfg.clone()))
            }
        }
    };
    let n = cfg.image_resolution;
    // Figures from different machines are only comparable with the CPU named.
    let cpu = device.is_cpu().then(simd::cpu_model);
    log.info(format!(
        "{} on {}{}, engine {}, {}",
        visual_model,
        crate::device::describe(&device),
        cpu.as_ref().map_or(String::new(), |c| format!(" ({c})")),
        plan.engine.name(),
        crate::engine::dtype_name(dtype)
    ));
    let mut report = serde_json::json!({
        "what": args.what.name(), "model": visual_model, "batch_size": b, "threads": threads,
        "device": crate::device::describe(&device), "precision": plan.precision.name(),
        "engine": plan.engine.name(), "dtype": crate::engine::dtype_name(dtype),
    });
    if let Some(c) = &cpu {
        report["cpu_model"] = c.as_str().into();
    }
    if plan.engine == engine::Engine::Candle {
        // Whether the candle engine's fused ops ran as kernels (on a GPU: once they matched
        // their CPU references there) or composed of candle's ops.
        let path = crate::models::fused::path(&device);
        report["fused_ops"] = path.name().into();
        log.info(format!("candle engine: fused ops {}", path.name()));
    }
    if plan.engine == engine::Engine::Native {
        // The fp32 products' cache blocking (a speed setting: `--what blocking` and
        // scripts/tune_blocking.py compare settings through these fields).
        let bl = native.gemm.blocking;
        report["isa"] = isa.name().into();
        report["gemm_kc"] = bl.kc.into();
        report["gemm_mc"] = bl.mc.into();
        report["gemm_blocking"] = source.name().into();
        report["gemm_prefetch"] = native.gemm.prefetch.into();
        report["threads_per_l2"] = simd::threads_per_l2(threads).into();
        if let Some(note) = super::blocking_note(bl, source) {
            log.info(note);
        }
    }
    if plan.requested != plan.precision {
        report["requested_precision"] = plan.requested.name().into();
    }
    // The peak of the bf16 kernel the model runs on, measured before it runs.
    let mut bf16 = None;
    if let Some(kernel) = native.bf16_kernel() {
        let secs = (args.seconds / 10.0).clamp(0.2, 1.0);
        let peak = bf16_peak(secs, false);
        say(format!(
            "bf16 dot-product peak (vdpbf16ps, {threads} threads): {peak:.1} GFLOP/s"
        ));
        report["bf16_peak_gflops"] = peak.into();
        report["bf16_kernel"] = kernel.into();
        bf16 = Some((peak, kernel));
        if native.gemm.amx {
            let tiles = bf16_peak(secs, true);
            say(format!(
                "bf16 tile peak (AMX tdpbf16ps, {threads} threads): {tiles:.1} GFLOP/s"
            ));
            report["amx_peak_gflops"] = tiles.into();
            bf16 = Some((tiles, kernel));
        }
    }
    // After each batch of the encoders on the CPU, the peaks again (`peak_share`'s pairing).
    let bf16_window = native.bf16_kernel().map(|_| native.gemm.amx);
    let mut window = move || peak_window(isa, bf16_window);
    match args.what {
        BenchWhat::Gemm => {
            // The transformer's matmul shapes at this batch size: the native gemm against
            // candle's CPU matmul (the candle engine's), same inputs, same run.
            let w = cfg.vision_width;
            let l = if cfg.is_vit() {
                let g = cfg.image_resolution / cfg.vision_patch_size.unwrap_or(1);
                g * g + 1
            } else {
                cfg.context_length
            };
            // The text encoder's shapes too: its products are shallower (width 512).
            let (tw, tm) = (cfg.transformer_width, b * cfg.context_length);
            let fma = fma_peak(isa, args.seconds / 12.0);
            say(format!(
                "FMA peak ({} vectors, {threads} threads): {fma:.1} GFLOP/s",
                isa.name()
            ));
            report["fma_peak_gflops"] = fma.into();
            // Each product against the peak of the kernel it runs on, measured as long as
            // the FMA peak.
            let (peak, kernel) = match bf16 {
                Some((_, kernel)) => {
                    let p = bf16_peak(args.seconds / 12.0, native.gemm.amx);
                    let key = if native.gemm.amx {
                        "amx_peak_gflops"
                    } else {
                        "bf16_peak_gflops"
                    };
                    report[key] = p.into();
                    (p, kernel)
                }
                None => (fma, isa.name()),
            };
            let mut rows = Vec::new();
            for (name, m, k, nn) in [
                ("qkv", b * l, w, 3 * w),
                ("fc", b * l, w, 4 * w),
                ("proj", b * l, 4 * w, w),
                ("text qkv", tm, tw, 3 * tw),
                ("text fc", tm, tw, 4 * tw),
                ("text proj", tm, 4 * tw, tw),
            ] {
                let (ours, theirs) = gemm_pair(native.gemm, m, k, nn, args.seconds / 12.0)?;
                say(format!(
                    "{name} [{m}x{k}] @ [{k}x{nn}]: native {ours:.1} GFLOP/s ({kernel}, {:.0}% of peak), candle matmul {theirs:.1} GFLOP/s, ratio {:.2}",
                    100.0 * ours / peak,
                    ours / theirs
                ));
                rows.push(serde_json::json!({"op": name, "m": m, "k": k, "n": nn,
                    "kernel": kernel, "native_gflops": ours, "candle_gflops": theirs}));
            }
            report["gemm"] = rows.into();
        }
        BenchWhat::Image => {
            let (m, cfg) = model()?;
            let n = cfg.image_resolution;
            let px = Tensor::randn(0f32, 1.0, (b, 3, n, n), &device)?;
            let peak = cpu_peak(&device, isa, args.seconds);
            let t = time_loop_paired(
                args.seconds,
                || {
                    let f = m.encode_image(&px)?;
                    f.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
                    Ok(())
                },
                peak.map(|_| &mut window as &mut dyn FnMut() -> Window),
            )?;
            let ips = t.rate(b as f64);
            let gflops = ips * image_flops(&cfg) / 1e9;
            report["images_per_s"] = ips.into();
            report["gflops"] = gflops.into();
            let per_iter = b as f64 * image_flops(&cfg) / 1e9;
            let of_peak = peak_share(peak, isa, bf16, &t, per_iter, &mut report);
            say(format!(
                "{visual_model} image encoder: {ips:.2} images/s, {gflops:.1} GFLOP/s{of_peak} (batch {b}, {threads} threads)",
            ));
        }
        BenchWhat::Text => {
            let (m, cfg) = model()?;
            let names = crate::data::lines(crate::data::labels::files::IMAGENET_CLASSNAMES);
            let templates = crate::data::labels::imagenet_templates();
            let prompts: Vec<String> = names
                .iter()
                .flat_map(|c| templates.iter().map(move |t| crate::data::fill(t, c)))
                .take(b)
                .collect();
            let ctx = cfg.context_length;
            let mut ids = Vec::new();
            for p in &prompts {
                ids.extend(crate::tokenizer::Tokenizer::global().tokenize(p, ctx, true)?);
            }
            if cfg.family.pools_last() {
                // A SigLIP or CLIPA tower computes every position whatever its ids: CLIP's
                // ids, folded into its vocabulary, cost what its own tokenizer's would.
                let vocab = cfg.vocab_size.max(1) as i64;
                ids.iter_mut().for_each(|t| *t %= vocab);
            }
            if let Some(h) = &cfg.hf_text {
                crate::models::hf_text::fold_clip_ids(&mut ids, cfg.vocab_size, h.pad_id);
            }
            // A CLIP tower computes up to the batch's latest end-of-text position only, an HF
            // tower up to its last non-pad id.
            let positions = match &cfg.hf_text {
                Some(h) => {
                    let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
                    crate::models::hf_text::hf_span(&ids, ctx, h.pad_id)
                }
                None => crate::models::text::span(
                    cfg.family,
                    cfg.text_eos_id().map(i64::from),
                    cfg.text_causal(),
                    &ids,
                    ctx,
                ),
            };
            // The native engine's last block computes only the pooled row's query: CLIP's
            // end-of-text, SigLIP's and CLIPA's last position.
            let at_eot = (matches!(
                cfg.family,
                crate::models::Family::Clip | crate::models::Family::CustomText
            ) || cfg.family.pools_last())
                && m.engine() == engine::Engine::Native;
            // The native engine computes the positions every prompt starts with once.
            // (Not where every position sees every other: SigLIP's, CLIPA's.)
            let shared = if m.engine() == engine::Engine::Native
                && cfg.hf_text.is_none()
                && cfg.text_causal()
            {
                let ids: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
                crate::native::text::shared_rows(&ids, prompts.len(), ctx, positions)
            } else {
                0
            };
            let per_iter = text_batch_flops(&cfg, prompts.len(), positions, at_eot, shared) / 1e9;
            let tok = Tensor::from_vec(ids, (prompts.len(), ctx), &device)?;
            let peak = cpu_peak(&device, isa, args.seconds);
            let t = time_loop_paired(
                args.seconds,
                || {
                    m.encode_text(&tok)?
                        .to_dtype(DType::F32)?
                        .to_device(&Device::Cpu)?;
                    Ok(())
                },
                peak.map(|_| &mut window as &mut dyn FnMut() -> Window),
            )?;
            let pps = t.rate(prompts.len() as f64);
            let gflops = t.rate(per_iter);
            report["prompts_per_s"] = pps.into();
            report["positions"] = positions.into();
            report["shared_positions"] = shared.into();
            report["gflops"] = gflops.into();
            let of_peak = peak_share(peak, isa, bf16, &t, per_iter, &mut report);
            let once = if shared > 0 {
                format!(", the first {shared} once for the batch")
            } else {
                String::new()
            };
            say(format!(
                "text encoder: {pps:.1} prompts/s, {gflops:.1} GFLOP/s{of_peak} (batch {}, {positions} of {ctx} positions{once}, {threads} threads)",
                prompts.len()
            ));
        }
        BenchWhat::Tokenize => {
            let names = crate::data::lines(crate::data::labels::files::IMAGENET_CLASSNAMES);
            let templates = crate::data::labels::imagenet_templates();
            let prompts: Vec<String> = names
                .iter()
                .flat_map(|c| templates.iter().map(move |t| crate::data::fill(t, c)))
                .collect();
            let tok = crate::tokenizer::Tokenizer::global();
            let t = Instant::now();
            for p in &prompts {
                tok.tokenize(p, 77, true)?;
            }
            let secs = t.elapsed().as_secs_f64();
            report["prompts"] = prompts.len().into();
            report["seconds"] = secs.into();
            say(format!("tokenizer: {} ImageNet prompts in {secs:.3}s on one thread (first use, vocabulary load included)", prompts.len()));
        }
        BenchWhat::Preprocess => {
            let files: Vec<Vec<u8>> = if args.images.is_empty() {
                crate::synth::synthetic_jpegs(16)?
            } else {
                args.images
                    .iter()
                    .map(std::fs::read)
                    .collect::<Result<_, _>>()?
            };
            // One core: the per-core figure the README compares with PIL.
            let t = time_loop(args.seconds, || {
                for f in &files {
                    crate::preprocess::crop_u8_from_bytes(
                        f,
                        n,
                        crate::preprocess::Resize::default(),
                    )
                    .map_err(|e| fail(exit::INPUT, e.to_string()))?;
                }
                Ok(())
            })?;
            let ips = t.rate(files.len() as f64);
            report["images_per_s_per_core"] = ips.into();
            say(format!(
                "decode + preprocess: {ips:.1} images/s on one core ({} files, resolution {n})",
                files.len()
            ));
        }
        BenchWhat::Eval => {
            let (m, cfg) = model()?;
            let n = cfg.image_resolution;
            let files = crate::synth::synthetic_jpegs(8)?;
            let dir = tempdir()?;
            let count = (b * 4).max(32);
            let class_dir = dir.join("val/c0");
            std::fs::create_dir_all(&class_dir)?;
            let mut paths = Vec::new();
            for i in 0..count {
                let p = class_dir.join(format!("img{i:05}.jpg"));
                std::fs::write(&p, &files[i % files.len()])?;
                paths.push(p);
            }
            let px = Tensor::randn(0f32, 1.0, (b, 3, n, n), &device)?;
            let model_ips = time_loop(args.seconds, || {
                m.encode_image_normalized(&px)?.to_device(&Device::Cpu)?;
                Ok(())
            })?
            .rate(b as f64);
            let samples = std::sync::Arc::new(
                paths
                    .iter()
                    .map(|p| crate::data::Sample::file(p.clone(), 0))
                    .collect::<Vec<_>>(),
            );
            let t = Instant::now();
            let mut done = 0usize;
            let mut rounds = 0;
            while rounds < 1 || t.elapsed().as_secs_f64() < args.seconds {
                let rx = crate::data::stream(
                    samples.clone(),
                    (0..count).collect(),
                    crate::data::DecodeOptions {
                        resolution: n,
                        resize: Default::default(),
                        batch_size: b,
                        workers: threads,
                        skip_unreadable: false,
                    },
                    std::sync::Arc::new(false.into()),
                );
                for batch in rx {
                    let batch = batch?;
                    let k = batch.indices.len();
                    let pxb = crate::preprocess::normalize_batch(
                        batch.crops,
                        k,
                        n,
                        &device,
                        Default::default(),
                    )?;
                    m.encode_image_normalized(&pxb)?.to_device(&Device::Cpu)?;
                    done += k;
                }
                rounds += 1;
            }
            let e2e = done as f64 / t.elapsed().as_secs_f64();
            let _ = std::fs::remove_dir_all(&dir);
            report["model_images_per_s"] = model_ips.into();
            report["end_to_end_images_per_s"] = e2e.into();
            report["ratio"] = (e2e / model_ips).into();
            say(format!(
                "eval pipeline: {e2e:.2} images/s end to end vs {model_ips:.2} model-only ({:.0}%)",
                100.0 * e2e / model_ips
            ));
        }
        BenchWhat::Blocking => {
            // Without a model named, the three encoders the blocking serves most: ViT-B-32's
            // and RN50's images and the text (the same tower in every PyramidCLIP model).
            let loads = match (&args.visual_model, &args.model_config) {
                (None, None) => vec![
                    workload(None, "ViT-B-32", tune::Work::Image)?,
                    workload(None, "RN50", tune::Work::Image)?,
                    workload(None, "ViT-B-32", tune::Work::Text)?,
                ],
                _ => vec![
                    workload(
                        args.model_config.as_deref(),
                        visual_model,
                        tune::Work::Image,
                    )?,
                    workload(args.model_config.as_deref(), visual_model, tune::Work::Text)?,
                ],
            };
            // --seconds is the whole budget's scale: a window is a tenth of it (at most 2 s).
            let window = (args.seconds / 10.0).min(2.0);
            let opts = tune::SweepOptions::around(native, b, window);
            let d = gemm::Blocking::default_for(isa, threads);
            let names: Vec<&str> = loads.iter().map(|l| l.name.as_str()).collect();
            say(format!(
                "fp32 products on {} ({} kernels, {threads} threads, batch {b}): each blocking's speed over the default (kc {}, mc {}), {}",
                cpu.clone().unwrap_or_default(),
                isa.name(),
                d.kc,
                d.mc,
                names.join(" / ")
            ));
            let row = |s: &tune::Score| {
                let per: Vec<String> = s.ratios.iter().map(|r| format!("{r:.3}")).collect();
                format!(
                    "  kc {:>4}, mc {:>3}: {:.3} ({})",
                    s.blocking.kc,
                    s.blocking.mc,
                    s.speedup,
                    per.join(" / ")
                )
            };
            let sweep = tune::sweep(&loads, &opts, |e| match e {
                tune::Event::Ready { seconds } => say(format!(
                    "about {:.0} minutes (the encoders' batches alternate, default and candidate)",
                    (seconds / 60.0).round().max(1.0)
                )),
                tune::Event::Scored(s) => say(row(s)),
                tune::Event::Confirmed(s) => say(format!("{} (measured again)", row(s))),
            })?;
            let entry = tune::Entry {
                cpu_model: simd::cpu_model(),
                isa: isa.name().into(),
                threads,
                kc: sweep.chosen.kc,
                mc: sweep.chosen.mc,
                speedup: sweep.speedup,
                default_kc: d.kc,
                default_mc: d.mc,
                version: env!("CARGO_PKG_VERSION").into(),
            };
            let file = super::blocking_file();
            tune::store(&file, &entry)?;
            say(format!(
                "chosen: kc {}, mc {} ({}), stored in {} for later runs on this CPU",
                entry.kc,
                entry.mc,
                if sweep.chosen == d {
                    format!(
                        "the default: no candidate gained {:.0}%",
                        100.0 * (tune::MIN_GAIN - 1.0)
                    )
                } else {
                    format!("{:.3}x the default, measured again", sweep.speedup)
                },
                file.display()
            ));
            report["blocking"] = serde_json::json!({
                "chosen": {"kc": entry.kc, "mc": entry.mc, "speedup": entry.speedup},
                "default": {"kc": d.kc, "mc": d.mc},
                "encoders": names,
                "window_seconds": window,
                "file": file.display().to_string(),
                "scores": sweep.scores.iter().map(|s| serde_json::json!({
                    "kc": s.blocking.kc, "mc": s.blocking.mc, "speedup": s.speedup, "ratios": s.ratios,
                })).collect::<Vec<_>>(),
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// One encoder of an architecture, for `--what blocking`.
fn workload(
    model_config: Option<&std::path::Path>,
    name: &str,
    work: tune::Work,
) -> anyhow::Result<tune::Workload> {
    let kind = match work {
        tune::Work::Image => "image",
        tune::Work::Text => "text",
    };
    Ok(tune::Workload {
        name: format!("{name} {kind}"),
        config: super::architecture(model_config, name)?,
        work,
    })
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("pyramidclip-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text count: the published width-512, 12-layer tower over 77 positions, and a last
    /// block at the end-of-text row only, which saves that block's per-row work on every
    /// other position and, over one position, nothing.
    #[test]
    fn text_flops_count_the_rows_each_block_computes() {
        let registry = crate::models::config::Registry::builtin();
        let cfg = registry.get("ViT-B-32").unwrap().clone();
        let (w, l) = (512.0, 77.0);
        let block = (l * 12.0 * w * w + 2.0 * l * l * w) * 2.0;
        let full = text_flops(&cfg, 77, false);
        assert!(
            (full - (12.0 * block + w * 512.0 * 2.0)).abs() < 1.0,
            "{full}"
        );
        let saved = full - text_flops(&cfg, 77, true);
        let per_row = (10.0 * w * w + 2.0 * l * w) * 2.0;
        assert!((saved - (l - 1.0) * per_row).abs() < 1.0, "{saved}");
        assert_eq!(text_flops(&cfg, 1, true), text_flops(&cfg, 1, false));
    }

    /// A prefix computed once for the batch: every block over all positions runs
    /// `p + n (l - p)` rows instead of `n l` (CLIP's last block, at the end-of-text rows,
    /// saves nothing).
    #[test]
    fn a_shared_prefix_is_counted_once() {
        let registry = crate::models::config::Registry::builtin();
        let cfg = registry.get("ViT-B-32").unwrap().clone();
        let (w, l, n, p) = (512.0, 77.0, 80.0, 5.0);
        assert_eq!(
            text_batch_flops(&cfg, 80, 77, false, 0),
            80.0 * text_flops(&cfg, 77, false)
        );
        let rows = p + n * (l - p);
        let block = (rows * 12.0 * w * w + 2.0 * rows * l * w) * 2.0;
        let direct = 12.0 * block + n * w * 512.0 * 2.0;
        let counted = text_batch_flops(&cfg, 80, 77, false, 5);
        assert!((counted - direct).abs() < 1e3, "{counted} vs {direct}");
        let at_eot = text_batch_flops(&cfg, 80, 77, true, 5);
        let direct = 11.0 * block
            + n * (text_flops(&cfg, 77, true) - 11.0 * (l * 12.0 * w * w + 2.0 * l * l * w) * 2.0);
        assert!((at_eot - direct).abs() < 1e3, "{at_eot} vs {direct}");
    }

    /// The paired share is the median of each iteration's rate over its own window's peak,
    /// skipping windows without that peak.
    #[test]
    fn paired_share_is_the_median_of_each_batch_over_its_window() {
        let w = |fma: f64, bf16: Option<f64>| Window { fma, bf16 };
        let t = Timing {
            iters: 4,
            secs: 4.0,
            best: 0.5,
            // 10 GFLOP an iteration: 20, 10, 5 and 10 GFLOP/s.
            paired: vec![
                (0.5, w(40.0, Some(80.0))),
                (1.0, w(10.0, None)),
                (2.0, w(10.0, Some(10.0))),
                (1.0, w(20.0, Some(20.0))),
            ],
        };
        // 0.5, 1.0, 0.5, 0.5 -> 0.5; bf16: 0.25, 0.5, 0.5 -> 0.5.
        assert_eq!(t.paired_share(10.0, |w| Some(w.fma)), Some(0.5));
        assert_eq!(t.paired_share(10.0, |w| w.bf16), Some(0.5));
        // An even count takes the middle two's mean.
        let two = Timing {
            paired: vec![(1.0, w(10.0, None)), (1.0, w(20.0, None))],
            ..t
        };
        assert_eq!(two.paired_share(10.0, |w| Some(w.fma)), Some(0.75));
        let none = Timing {
            paired: Vec::new(),
            ..two
        };
        assert_eq!(none.paired_share(10.0, |w| Some(w.fma)), None);
    }
}
