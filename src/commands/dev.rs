//! `pyramidclip dev ...` (hidden): development tools the scripts under `scripts/` use —
//! synthetic image folders, random-weight checkpoints, and feature comparison.

use super::{exit, fail};
use crate::cli::{CompareArgs, DevCommand, ProbeFitArgs, RandomCheckpointArgs, SynthArgs};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

pub fn run(cmd: DevCommand) -> anyhow::Result<()> {
    match cmd {
        DevCommand::Synth(a) => synth(a),
        DevCommand::Compare(a) => compare(a),
        DevCommand::RandomCheckpoint(a) => random_checkpoint(a),
        DevCommand::AmxProbe => {
            crate::native::bf16::amx_self_test().map_err(|e| fail(exit::RUNTIME, e))
        }
        DevCommand::ProbeFit(a) => probe_fit(a),
        DevCommand::KernelCheck { device } => kernel_check(&device),
        DevCommand::Mat { file } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| fail(exit::INPUT, format!("{}: {e}", file.display())))?;
            let vars = crate::data::mat::parse(&bytes)
                .map_err(|e| fail(exit::INPUT, format!("{}: {e}", file.display())))?;
            let json: serde_json::Map<_, _> =
                vars.iter().map(|(k, v)| (k.clone(), mat_json(v))).collect();
            println!("{}", serde_json::Value::Object(json));
            Ok(())
        }
    }
}

fn kernel_check(device: &str) -> anyhow::Result<()> {
    let spec: crate::device::DeviceSpec = device
        .parse()
        .map_err(|e| fail(exit::USAGE, format!("--device {device}: {e}")))?;
    let dev = crate::device::select(spec, None).map_err(|e| fail(exit::RUNTIME, e.to_string()))?;
    let checks = crate::models::fused::self_check(&dev, 0x5eed)?;
    let mut bad = 0;
    for c in &checks {
        let verdict = if c.ok() { "ok" } else { "FAIL" };
        println!(
            "{:44} {:10.3e} (bound {:.1e}) {verdict}",
            c.op, c.rel_diff, c.bound
        );
        bad += usize::from(!c.ok());
    }
    println!(
        "{} of {} fused-op checks within bounds on {device}",
        checks.len() - bad,
        checks.len()
    );
    if bad > 0 {
        return Err(fail(
            exit::RUNTIME,
            format!("{bad} fused-op checks over their bounds"),
        ));
    }
    Ok(())
}

/// A MATLAB array as JSON: its kind, dimensions and elements in MATLAB's order.
fn mat_json(a: &crate::data::mat::Array) -> serde_json::Value {
    use crate::data::mat::Array;
    use serde_json::json;
    match a {
        Array::Num { dims, data } => json!({"num": dims, "data": data}),
        Array::Char { dims, rows } => json!({"char": dims, "rows": rows}),
        Array::Cell { dims, items } => {
            json!({"cell": dims, "items": items.iter().map(mat_json).collect::<Vec<_>>()})
        }
        Array::Struct {
            dims,
            fields,
            items,
        } => json!({"struct": dims, "fields": fields, "items": items
            .iter()
            .map(|e| e.iter().map(mat_json).collect::<Vec<_>>())
            .collect::<Vec<_>>()}),
    }
}

/// The probe's fit on given features: iterations, loss, seconds and the test predictions.
fn probe_fit(args: ProbeFitArgs) -> anyhow::Result<()> {
    use crate::probe::{self, Dataset, FitOptions};
    let t = candle_core::safetensors::load(&args.features, &Device::Cpu)
        .map_err(|e| fail(exit::INPUT, format!("{}: {e}", args.features.display())))?;
    let get = |name: &str| {
        t.get(name).ok_or_else(|| {
            fail(
                exit::INPUT,
                format!("{}: no tensor `{name}`", args.features.display()),
            )
        })
    };
    let set = |x: &str, y: &str| -> anyhow::Result<Dataset> {
        let x = get(x)?.to_dtype(DType::F32)?;
        let dim = x.dims2()?.1;
        let y: Vec<i64> = get(y)?.to_dtype(DType::I64)?.to_vec1()?;
        Ok(Dataset::new(
            x.flatten_all()?.to_vec1()?,
            y.into_iter().map(|v| v as usize).collect(),
            dim,
        ))
    };
    let (mut train, mut test) = (set("train_x", "train_y")?, set("test_x", "test_y")?);
    if args.fit == crate::cli::ProbeFit::Adamw {
        return adamw_fit(args, train, test);
    }
    if args.normalize {
        train.l2_normalize();
        test.l2_normalize();
    }
    let k = train.y.iter().chain(&test.y).max().map_or(0, |&m| m + 1);
    let t0 = std::time::Instant::now();
    let fit = probe::fit(
        &train,
        k,
        FitOptions {
            c: args.c,
            max_iter: args.max_iter,
            tol: 1e-4,
        },
        None,
    )?;
    let seconds = t0.elapsed().as_secs_f64();
    let top = fit.topk(&test, 1);
    let acc1 = probe::accuracy(&top, &test.y, k).0;
    let out = serde_json::json!({
        "iterations": fit.iterations,
        "converged": fit.stop.converged(),
        "stop": fit.stop.name(),
        "loss": fit.loss,
        "seconds": seconds,
        "acc1": acc1,
        "predictions": top.iter().map(|t| t[0]).collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(())
}

/// CLIP_benchmark's AdamW training on given features: seconds and the test predictions.
fn adamw_fit(
    args: ProbeFitArgs,
    mut train: crate::probe::Dataset,
    mut test: crate::probe::Dataset,
) -> anyhow::Result<()> {
    use crate::adamw_probe as ap;
    ap::normalize_rows(&mut train);
    ap::normalize_rows(&mut test);
    let o = ap::Options {
        epochs: args.epochs,
        batch_size: args.batch_size,
        seed: args.seed,
        weight_decay: args.weight_decay,
        ..Default::default()
    };
    let classes = train.y.iter().max().map_or(0, |&m| m + 1);
    let t0 = std::time::Instant::now();
    let (model, chosen) = match args.val_fraction {
        Some(f) => {
            let (tr, va) = crate::probe::split_validation(&train.y, f);
            let out = ap::evaluate(&train.select(&tr), Some(&train.select(&va)), &o)
                .map_err(|e| fail(exit::INPUT, e.to_string()))?;
            (out.model, out.weight_decay)
        }
        None => (
            ap::train(&train, classes, args.weight_decay, &o),
            args.weight_decay,
        ),
    };
    let seconds = t0.elapsed().as_secs_f64();
    let top = model.topk(&test, 1);
    let acc1 = crate::probe::accuracy(&top, &test.y, classes).0;
    let out = serde_json::json!({
        "seconds": seconds,
        "weight_decay": chosen,
        "acc1": acc1,
        "predictions": top.iter().map(|t| t[0]).collect::<Vec<_>>(),
    });
    println!("{out}");
    Ok(())
}

/// A random-weight checkpoint of `--visual-model` (keys as released), safetensors.
fn random_checkpoint(args: RandomCheckpointArgs) -> anyhow::Result<()> {
    let cfg = super::architecture(args.model_config.as_deref(), &args.visual_model)?;
    let dtype = args.dtype.dtype();
    let tensors: Vec<(String, Tensor)> = crate::synth::random_state_dict(&cfg, args.seed)?
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(dtype)?)))
        .collect::<candle_core::Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("architecture".to_string(), args.visual_model.clone());
    meta.insert("config".to_string(), serde_json::to_string(&cfg)?);
    crate::util::write_safetensors(&args.out, &tensors, Some(meta))?;
    Ok(())
}

/// `pyramidclip synth OUT`: OUT/val/classNN/imgNNNNN.jpg, plus OUT/images.txt and OUT/texts.txt.
fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let files = crate::synth::synthetic_jpegs(args.images.clamp(1, 64))?;
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
fn compare(args: CompareArgs) -> anyhow::Result<()> {
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
    // Whichever features the reference holds (an image-only or text-only `embed` too).
    let names: Vec<&str> = ["image_features", "text_features"]
        .into_iter()
        .filter(|n| a.contains_key(*n))
        .collect();
    if names.is_empty() {
        return Err(fail(
            exit::INPUT,
            format!(
                "{} has neither `image_features` nor `text_features`",
                args.reference.display()
            ),
        ));
    }
    let mut worst = 1.0f64;
    for &name in &names {
        let (ra, rb) = (
            rows(&a, name, &args.reference)?,
            rows(&b, name, &args.candidate)?,
        );
        if ra.len() != rb.len() {
            return Err(fail(
                exit::INPUT,
                format!(
                    "`{name}`: {} rows in {}, {} in {}",
                    ra.len(),
                    args.reference.display(),
                    rb.len(),
                    args.candidate.display()
                ),
            ));
        }
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
    let agree = if names.len() == 2 {
        let (pa, pb) = (top1(&a, &args.reference)?, top1(&b, &args.candidate)?);
        let agree =
            pa.iter().zip(&pb).filter(|(x, y)| x == y).count() as f64 / pa.len().max(1) as f64;
        println!(
            "top-1 agreement {:.2}% ({} images)",
            agree * 100.0,
            pa.len()
        );
        agree
    } else {
        1.0
    };
    if worst < args.min_cosine || agree < args.min_top1 {
        return Err(fail(
            exit::RUNTIME,
            format!("features differ: min cosine {worst:.6} (need {}), top-1 agreement {:.2}% (need {:.0}%)", args.min_cosine, agree * 100.0, args.min_top1 * 100.0),
        ));
    }
    println!("PASS");
    Ok(())
}
