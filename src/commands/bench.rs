//! `pyramidclip bench`: throughput of the encoders, of preprocessing and of the whole pipeline,
//! with random weights unless a checkpoint is given.

use super::{exit, fail, Log};
use crate::cli::BenchArgs;
use crate::models::{Config, PyramidClip, VisionLayers};
use candle_core::{DType, Device, Shape, Tensor};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// A VarBuilder backend that makes plausible random weights and remembers them.
struct RandomWeights {
    made: Mutex<BTreeMap<String, Tensor>>,
    seed: u64,
}

fn rng_next(state: &mut u64) -> f32 {
    // xorshift64*: reproducible, dependency-free.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
    ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        _dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let n = s.elem_count();
        let mut st = self.seed
            ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
        st |= 1;
        let fan_in = if s.dims().len() >= 2 {
            s.dims()[1..].iter().product::<usize>()
        } else {
            1
        };
        let scale = 1.0 / (fan_in as f32).sqrt();
        let vals: Vec<f32> = if name.ends_with("running_var") {
            (0..n)
                .map(|_| 1.0 + 0.5 * rng_next(&mut st).abs())
                .collect()
        } else if name.ends_with("running_mean")
            || name.ends_with(".bias")
            || name.ends_with("in_proj_bias")
        {
            (0..n).map(|_| 0.02 * rng_next(&mut st)).collect()
        } else if name.contains("ln_")
            || name.ends_with("bn.weight")
            || name.contains(".bn") && name.ends_with("weight")
        {
            (0..n).map(|_| 1.0 + 0.1 * rng_next(&mut st)).collect()
        } else {
            (0..n).map(|_| scale * rng_next(&mut st)).collect()
        };
        let t = Tensor::from_vec(vals, s, &Device::Cpu)?;
        self.made
            .lock()
            .unwrap()
            .insert(name.to_string(), t.clone());
        t.to_device(dev)
    }
    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }
    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A full state dict of random weights for `cfg` (keys as in released checkpoints).
pub fn random_state_dict(cfg: &Config, seed: u64) -> anyhow::Result<Vec<(String, Tensor)>> {
    let backend = RandomWeights {
        made: Mutex::new(BTreeMap::new()),
        seed,
    };
    let rw = std::sync::Arc::new(backend);
    let vb = candle_nn::VarBuilder::from_backend(
        Box::new(crate::checkpoint::Shared(rw.clone())),
        DType::F32,
        Device::Cpu,
    );
    PyramidClip::new(cfg, vb)?;
    let mut out: Vec<(String, Tensor)> = rw
        .made
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.push((
        "logit_scale".into(),
        Tensor::new(&[4.6052f32], &Device::Cpu)?.reshape(())?,
    ));
    Ok(out)
}

fn random_model(cfg: &Config, dtype: DType, device: &Device) -> anyhow::Result<PyramidClip> {
    let backend = RandomWeights {
        made: Mutex::new(BTreeMap::new()),
        seed: 1,
    };
    let vb = candle_nn::VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    Ok(PyramidClip::new(cfg, vb)?)
}

/// Multiply-adds x 2 of one image through the image encoder.
pub fn image_flops(cfg: &Config) -> f64 {
    match &cfg.vision_layers {
        VisionLayers::Vit(layers) => {
            let p = cfg.vision_patch_size.unwrap_or(1) as f64;
            let w = cfg.vision_width as f64;
            let g = (cfg.image_resolution as f64 / p).floor();
            let l = g * g + 1.0;
            let patch = g * g * 3.0 * p * p * w * 2.0;
            let block = l * 4.0 * w * w * 2.0 + 2.0 * l * l * w * 2.0 + l * 8.0 * w * w * 2.0;
            patch + *layers as f64 * block + w * cfg.embed_dim as f64 * 2.0
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

pub fn text_flops(cfg: &Config) -> f64 {
    let w = cfg.transformer_width as f64;
    let l = cfg.context_length as f64;
    cfg.transformer_layers as f64 * (l * 12.0 * w * w * 2.0 + 2.0 * l * l * w * 2.0)
        + w * cfg.embed_dim as f64 * 2.0
}

/// Synthetic photo-like JPEGs (smooth gradients plus noise), 500x375, 4:2:0, quality 90.
pub fn synthetic_jpegs(count: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let (w, h) = (500usize, 375usize);
    let mut out = Vec::new();
    let mut st = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..count {
        let mut px = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let n = rng_next(&mut st) * 12.0;
                let v = [
                    (x as f32 * 0.4 + i as f32 * 30.0 + n) as i32,
                    (y as f32 * 0.6 + n) as i32,
                    ((x + y) as f32 * 0.3 + 60.0 + n) as i32,
                ];
                for c in 0..3 {
                    px[(y * w + x) * 3 + c] = v[c].rem_euclid(256) as u8;
                }
            }
        }
        let bytes = std::panic::catch_unwind(|| -> std::io::Result<Vec<u8>> {
            let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
            // Baseline (not progressive) like most camera and ImageNet files.
            comp.set_fastest_defaults();
            comp.set_size(w, h);
            comp.set_quality(90.0);
            let mut started = comp.start_compress(Vec::new())?;
            started.write_scanlines(&px)?;
            started.finish()
        })
        .map_err(|_| fail(exit::RUNTIME, "JPEG encoder failed"))??;
        out.push(bytes);
    }
    Ok(out)
}

fn time_loop(
    seconds: f64,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(usize, f64)> {
    f()?; // warm-up
    let t = Instant::now();
    let mut iters = 0;
    while iters < 2 || t.elapsed().as_secs_f64() < seconds {
        f()?;
        iters += 1;
    }
    Ok((iters, t.elapsed().as_secs_f64()))
}

/// On the CPU, the FMA peak of the pool's threads, measured before the model runs (idle
/// workers still spinning after it would lower it).
fn cpu_peak(device: &Device, seconds: f64) -> Option<f64> {
    device.is_cpu().then(|| {
        fma_peak(
            crate::models::sgemm::isa(),
            (seconds / 10.0).clamp(0.2, 1.0),
        )
    })
}

/// ", N% of the FMA peak (P GFLOP/s, isa)" for the report line, by the model's FLOP count (the
/// reference's work, whatever we skip); records the peak in `report`.
fn peak_share(peak: Option<f64>, gflops: f64, report: &mut serde_json::Value) -> String {
    let Some(peak) = peak else {
        return String::new();
    };
    report["fma_peak_gflops"] = peak.into();
    format!(
        ", {:.0}% of the FMA peak ({peak:.0} GFLOP/s, {})",
        100.0 * gflops / peak,
        crate::models::sgemm::isa().name()
    )
}

/// GFLOP/s of independent multiply-adds on every thread of the pool at once.
fn fma_peak(isa: crate::models::sgemm::Isa, seconds: f64) -> f64 {
    let start = std::time::Instant::now();
    let mut flops = 0.0;
    while flops == 0.0 || start.elapsed().as_secs_f64() < seconds {
        let done = rayon::broadcast(|_| crate::models::sgemm::fma_burst(isa, 1 << 20));
        flops += done.iter().sum::<f64>();
    }
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// GFLOP/s of `[m, k] @ [k, n]` through our packed gemm and through the gemm crate.
fn gemm_pair(m: usize, k: usize, n: usize, seconds: f64) -> anyhow::Result<(f64, f64)> {
    use crate::models::sgemm;
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
        .collect();
    let bm: Vec<f32> = (0..k * n)
        .map(|i| ((i * 104_729) % 1000) as f32 * 1e-3)
        .collect();
    let packed = sgemm::PackedB::new(&bm, k, n, n, 1);
    let mut c = vec![0f32; m * n];
    let flops = 2.0 * (m * k * n) as f64;
    let threads = rayon::current_num_threads();
    let (i1, s1) = time_loop(seconds, || {
        sgemm::gemm(
            m,
            &a,
            k,
            &packed,
            0..n,
            &mut c,
            n,
            &sgemm::Epilogue::NONE,
            true,
        );
        Ok(())
    })?;
    let (i2, s2) = time_loop(seconds, || {
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                bm.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            )
        };
        Ok(())
    })?;
    Ok((flops * i1 as f64 / s1 / 1e9, flops * i2 as f64 / s2 / 1e9))
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
    let reg = super::misc::registry(args.model_config.as_deref())?;
    let cfg = reg
        .get(&args.visual_model)
        .map_err(|m| fail(exit::USAGE, m))?
        .clone();
    let device = crate::device::select(&args.device, None)?;
    let (dtype, warning) = crate::device::compute_dtype(args.precision, &device);
    if let Some(w) = warning {
        log.warn(w);
    }
    let b = args.batch_size.max(1);
    let model = || -> anyhow::Result<PyramidClip> {
        match &args.checkpoint {
            Some(p) => Ok(crate::checkpoint::load_model(
                p,
                &reg,
                Some(&args.visual_model),
                dtype,
                &device,
            )?
            .model),
            None => random_model(&cfg, dtype, &device),
        }
    };
    let n = cfg.image_resolution;
    let mut report = serde_json::json!({
        "what": args.what, "model": args.visual_model, "batch_size": b, "threads": threads,
        "device": crate::device::describe(&device), "precision": args.precision.name(),
    });
    match args.what.as_str() {
        "gemm" => {
            // The transformer's matmul shapes at this batch size: ours against the gemm crate
            // (candle's CPU matmul backend), same inputs, same run.
            let w = cfg.vision_width;
            let l = if cfg.is_vit() {
                let g = cfg.image_resolution / cfg.vision_patch_size.unwrap_or(1);
                g * g + 1
            } else {
                cfg.context_length
            };
            // The text encoder's shapes too: its products are shallower (width 512).
            let (tw, tm) = (cfg.transformer_width, b * cfg.context_length);
            let isa = crate::models::sgemm::isa();
            let peak = fma_peak(isa, args.seconds / 12.0);
            say(format!(
                "FMA peak ({} vectors, {threads} threads): {peak:.1} GFLOP/s",
                isa.name()
            ));
            report["fma_peak_gflops"] = peak.into();
            let mut rows = Vec::new();
            for (name, m, k, nn) in [
                ("qkv", b * l, w, 3 * w),
                ("fc", b * l, w, 4 * w),
                ("proj", b * l, 4 * w, w),
                ("text qkv", tm, tw, 3 * tw),
                ("text fc", tm, tw, 4 * tw),
                ("text proj", tm, 4 * tw, tw),
            ] {
                let (ours, theirs) = gemm_pair(m, k, nn, args.seconds / 12.0)?;
                say(format!(
                    "{name} [{m}x{k}] @ [{k}x{nn}]: ours {ours:.1} GFLOP/s ({}, {:.0}% of peak), gemm crate {theirs:.1} GFLOP/s, ratio {:.2}",
                    isa.name(),
                    100.0 * ours / peak,
                    ours / theirs
                ));
                rows.push(serde_json::json!({"op": name, "m": m, "k": k, "n": nn,
                    "ours_gflops": ours, "gemm_crate_gflops": theirs}));
            }
            report["gemm"] = rows.into();
            report["isa"] = isa.name().into();
        }
        "image" => {
            let m = model()?;
            let px = Tensor::randn(0f32, 1.0, (b, 3, n, n), &device)?.to_dtype(dtype)?;
            let peak = cpu_peak(&device, args.seconds);
            let (iters, secs) = time_loop(args.seconds, || {
                let f = m.encode_image(&px)?;
                f.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
                Ok(())
            })?;
            let ips = (iters * b) as f64 / secs;
            let gflops = ips * image_flops(&cfg) / 1e9;
            report["images_per_s"] = ips.into();
            report["gflops"] = gflops.into();
            let of_peak = peak_share(peak, gflops, &mut report);
            say(format!(
                "{} image encoder: {ips:.2} images/s, {gflops:.1} GFLOP/s{of_peak} (batch {b}, {threads} threads)",
                args.visual_model,
            ));
        }
        "text" => {
            let m = model()?;
            let names = crate::dataset::lines(crate::dataset::data::IMAGENET_CLASSNAMES);
            let templates = crate::dataset::imagenet_templates();
            let prompts: Vec<String> = names
                .iter()
                .flat_map(|c| templates.iter().map(move |t| crate::dataset::fill(t, c)))
                .take(b)
                .collect();
            let ctx = cfg.context_length;
            let mut ids = Vec::new();
            for p in &prompts {
                ids.extend(crate::tokenizer::Tokenizer::global().tokenize(p, ctx, true)?);
            }
            let tok = Tensor::from_vec(ids, (prompts.len(), ctx), &device)?;
            let peak = cpu_peak(&device, args.seconds);
            let (iters, secs) = time_loop(args.seconds, || {
                m.encode_text(&tok)?
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?;
                Ok(())
            })?;
            let pps = (iters * prompts.len()) as f64 / secs;
            let gflops = pps * text_flops(&cfg) / 1e9;
            report["prompts_per_s"] = pps.into();
            report["gflops"] = gflops.into();
            let of_peak = peak_share(peak, gflops, &mut report);
            say(format!(
                "text encoder: {pps:.1} prompts/s, {gflops:.1} GFLOP/s{of_peak} (batch {}, {threads} threads)",
                prompts.len()
            ));
        }
        "tokenize" => {
            let names = crate::dataset::lines(crate::dataset::data::IMAGENET_CLASSNAMES);
            let templates = crate::dataset::imagenet_templates();
            let prompts: Vec<String> = names
                .iter()
                .flat_map(|c| templates.iter().map(move |t| crate::dataset::fill(t, c)))
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
        "preprocess" => {
            let files: Vec<Vec<u8>> = if args.images.is_empty() {
                synthetic_jpegs(16)?
            } else {
                args.images
                    .iter()
                    .map(std::fs::read)
                    .collect::<Result<_, _>>()?
            };
            // One core: the per-core figure the README compares with PIL.
            let (iters, secs) = time_loop(args.seconds, || {
                for f in &files {
                    crate::preprocess::crop_u8_from_bytes(f, n)
                        .map_err(|e| fail(exit::INPUT, e))?;
                }
                Ok(())
            })?;
            let ips = (iters * files.len()) as f64 / secs;
            report["images_per_s_per_core"] = ips.into();
            say(format!(
                "decode + preprocess: {ips:.1} images/s on one core ({} files, resolution {n})",
                files.len()
            ));
        }
        "eval" => {
            let m = model()?;
            let files = synthetic_jpegs(8)?;
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
            let px = Tensor::randn(0f32, 1.0, (b, 3, n, n), &device)?.to_dtype(dtype)?;
            let (iters, secs) = time_loop(args.seconds, || {
                m.encode_image_normalized(&px)?.to_device(&Device::Cpu)?;
                Ok(())
            })?;
            let model_ips = (iters * b) as f64 / secs;
            let samples = std::sync::Arc::new(
                paths
                    .iter()
                    .map(|p| crate::dataset::Sample {
                        path: p.clone(),
                        label: 0,
                    })
                    .collect::<Vec<_>>(),
            );
            let t = Instant::now();
            let mut done = 0usize;
            let mut rounds = 0;
            while rounds < 1 || t.elapsed().as_secs_f64() < args.seconds {
                let rx = crate::dataset::stream(
                    samples.clone(),
                    (0..count).collect(),
                    n,
                    b,
                    threads,
                    false,
                    std::sync::Arc::new(false.into()),
                );
                for batch in rx {
                    let batch = batch?;
                    let k = batch.indices.len();
                    let pxb = super::eval::normalize_batch(batch.crops, k, n, &device, dtype)?;
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
        other => {
            return Err(fail(
                exit::USAGE,
                format!("--what {other}: expected image, text, gemm, tokenize, preprocess or eval"),
            ))
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("pyramidclip-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// `pyramidclip synth OUT`: OUT/val/classNN/imgNNNNN.jpg, plus OUT/images.txt and OUT/texts.txt.
pub fn synth(args: crate::cli::SynthArgs) -> anyhow::Result<()> {
    let files = synthetic_jpegs(args.images.clamp(1, 64))?;
    let mut list = String::new();
    for i in 0..args.images {
        let dir = args
            .out
            .join("val")
            .join(format!("class{:02}", i % args.classes.max(1)));
        std::fs::create_dir_all(&dir)?;
        let p = dir.join(format!("img{i:05}.jpg"));
        std::fs::write(&p, &files[i % files.len()])?;
        list.push_str(&format!("{}\n", p.display()));
    }
    std::fs::write(args.out.join("images.txt"), list)?;
    let texts: Vec<String> = (0..args.classes.max(1))
        .map(|c| format!("a photo of a class {c} object."))
        .collect();
    std::fs::write(args.out.join("texts.txt"), texts.join("\n") + "\n")?;
    eprintln!(
        "wrote {} images in {} classes under {}",
        args.images,
        args.classes,
        args.out.display()
    );
    Ok(())
}

fn rows(
    t: &std::collections::HashMap<String, Tensor>,
    name: &str,
    file: &std::path::Path,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let t = t
        .get(name)
        .ok_or_else(|| fail(exit::INPUT, format!("{} has no `{name}`", file.display())))?;
    Ok(t.to_dtype(DType::F32)?.to_vec2()?)
}

/// `pyramidclip compare REF CAND`: cosine of every feature row and top-1 text agreement.
pub fn compare(args: crate::cli::CompareArgs) -> anyhow::Result<()> {
    let load = |p: &std::path::Path| {
        candle_core::safetensors::load(p, &Device::Cpu)
            .map_err(|e| fail(exit::INPUT, format!("cannot read {}: {e}", p.display())))
    };
    let (a, b) = (load(&args.reference)?, load(&args.candidate)?);
    let cos = |x: &[f32], y: &[f32]| {
        let d: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
        let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
        d / (nx * ny)
    };
    let mut worst = 1.0f64;
    for name in ["image_features", "text_features"] {
        let (ra, rb) = (
            rows(&a, name, &args.reference)?,
            rows(&b, name, &args.candidate)?,
        );
        let m = ra
            .iter()
            .zip(&rb)
            .map(|(x, y)| cos(x, y))
            .fold(1.0, f64::min);
        println!("{name}: {} rows, min cosine {m:.6}", ra.len());
        worst = worst.min(m);
    }
    let top1 = |f: &std::collections::HashMap<String, Tensor>,
                p: &std::path::Path|
     -> anyhow::Result<Vec<usize>> {
        let (img, txt) = (rows(f, "image_features", p)?, rows(f, "text_features", p)?);
        Ok(img
            .iter()
            .map(|i| {
                let s: Vec<f64> = txt.iter().map(|t| cos(i, t)).collect();
                (0..s.len()).fold(0, |bi, k| if s[k] > s[bi] { k } else { bi })
            })
            .collect())
    };
    let (pa, pb) = (top1(&a, &args.reference)?, top1(&b, &args.candidate)?);
    let agree = pa.iter().zip(&pb).filter(|(x, y)| x == y).count() as f64 / pa.len().max(1) as f64;
    println!(
        "top-1 agreement {:.2}% ({} images)",
        agree * 100.0,
        pa.len()
    );
    if worst < args.min_cosine || agree < args.min_top1 {
        return Err(fail(
            exit::RUNTIME,
            format!("features differ: min cosine {worst:.6} (need {}), top-1 agreement {:.2}% (need {:.0}%)", args.min_cosine, agree * 100.0, args.min_top1 * 100.0),
        ));
    }
    println!("PASS");
    Ok(())
}
