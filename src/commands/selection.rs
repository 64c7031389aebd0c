//! `pyramidclip caption-selection`: image-caption selection (Winoground, SugarCREPE).

use super::{checkpoint_sha, exit, fail, load_model, model_fields, workers, write_output};
use crate::cli::{SelectionArgs, SelectionFormat};
use crate::data::selection::{self, Format};
use crate::features::{self, StreamOptions};
use crate::report::{interrupted, Log, Progress};
use crate::results::csv_field;
use crate::selection::{metrics, outcome};
use crate::util::path_text;

pub fn run(args: SelectionArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.quiet };
    let _ = interrupted();
    if args.batch_size_test == 0 || args.text_batch_size == 0 {
        return Err(fail(
            exit::USAGE,
            "--batch-size-test and --text-batch-size must be at least 1",
        ));
    }
    let workers = workers(args.workers)?;
    let format = match args.format {
        SelectionFormat::Auto => None,
        SelectionFormat::SugarCrepe => Some(Format::SugarCrepe),
        SelectionFormat::Winoground => Some(Format::Winoground),
        SelectionFormat::Jsonl => Some(Format::Jsonl),
    };
    // The instances and images are checked before the (slow) model load.
    let set = selection::read(
        &args.captions,
        format,
        args.images_root.as_deref(),
        args.skip_unreadable,
    )?;
    let dataset = args.dataset.clone().unwrap_or_else(|| {
        let stem = set
            .source
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "selection".into());
        match set.format {
            Format::SugarCrepe => format!("sugar_crepe/{stem}"),
            Format::Winoground => "winoground".into(),
            Format::Jsonl => stem,
        }
    });
    for (_, why) in &set.skipped {
        log.warn(format!("{}: {why}; left out", set.source.display()));
    }
    let m = load_model(&args.model, None, log)?;
    let sha = checkpoint_sha(&m.checkpoint.path)?;
    log.info(format!(
        "{dataset}: {} instances, {} distinct images, {} distinct captions from {} ({})",
        set.items.len(),
        set.images.len(),
        set.captions.len(),
        set.source.display(),
        set.format.name()
    ));
    let t0 = std::time::Instant::now();
    let mut bar = Progress::new(log.quiet, set.images.len() as u64, "images", "img");
    let enc = features::stream_samples(
        &m,
        set.images.clone(),
        StreamOptions {
            batch_size: args.batch_size_test,
            workers,
            skip_unreadable: args.skip_unreadable,
            raw: false,
        },
        |d| bar.set(d as u64),
    )?;
    bar.finish();
    let mut bar = Progress::new(log.quiet, set.captions.len() as u64, "captions", "txt");
    let txt = features::texts_with_progress(&m, &set.captions, args.text_batch_size, false, |d| {
        bar.set(d as u64)
    })?
    .to_device(&candle_core::Device::Cpu)?
    .to_dtype(candle_core::DType::F32)?
    .to_vec2::<f32>()?;
    bar.finish();
    let img = enc
        .features
        .to_dtype(candle_core::DType::F32)?
        .to_vec2::<f32>()?;
    // Rows of the images that decoded; an instance with an unreadable image leaves.
    let mut row = vec![None; set.images.len()];
    for (j, &i) in enc.kept.iter().enumerate() {
        row[i] = Some(j);
    }
    let mut skipped: Vec<serde_json::Value> = set
        .skipped
        .iter()
        .map(|(id, why)| serde_json::json!({"instance": id, "error": why}))
        .collect();
    let unreadable: std::collections::HashMap<usize, &String> =
        enc.skipped.iter().map(|(i, why)| (*i, why)).collect();
    let mut scored = Vec::with_capacity(set.items.len());
    for item in &set.items {
        if let Some(&i) = item.images.iter().find(|&&i| row[i].is_none()) {
            let why = unreadable.get(&i).map_or("not decoded", |w| w.as_str());
            skipped.push(serde_json::json!({
                "instance": item.id,
                "error": format!("{}: {why}", path_text(&set.images[i].path)),
            }));
            continue;
        }
        let images: Vec<&[f32]> = item
            .images
            .iter()
            .map(|&i| img[row[i].unwrap_or_default()].as_slice())
            .collect();
        let captions: Vec<&[f32]> = item.captions.iter().map(|&c| txt[c].as_slice()).collect();
        scored.push((item, outcome(&images, &captions)));
    }
    if !enc.skipped.is_empty() {
        log.warn(format!(
            "{} unreadable image(s): their instances left out",
            enc.skipped.len()
        ));
    }
    if scored.is_empty() {
        return Err(fail(
            exit::INPUT,
            "no instance with readable images is left",
        ));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let outcomes: Vec<_> = scored.iter().map(|(_, o)| o.clone()).collect();
    let metrics = metrics(&outcomes);
    let pct = |k: &str| 100.0 * metrics[k].as_f64().unwrap_or_default();
    println!(
        "{dataset} Caption selection\ttext {:.2}\timage {:.2}\tgroup {:.2}\t({} instances)",
        pct("text_acc"),
        pct("image_acc"),
        pct("acc"),
        scored.len()
    );
    if let Some(out) = &args.output {
        let mut o = serde_json::Map::new();
        o.insert("task".into(), "image_caption_selection".into());
        o.insert("dataset".into(), dataset.clone().into());
        o.extend(model_fields(&m, &sha));
        o.insert("captions".into(), path_text(&set.source).into());
        o.insert("format".into(), set.format.name().into());
        o.insert("num_instances".into(), scored.len().into());
        o.insert("num_images".into(), enc.kept.len().into());
        o.insert("num_captions".into(), set.captions.len().into());
        o.insert("metrics".into(), metrics.into());
        o.insert("skipped".into(), skipped.into());
        o.insert("elapsed_s".into(), elapsed.into());
        o.insert("version".into(), crate::results::VERSION.into());
        let body = serde_json::to_string_pretty(&serde_json::Value::Object(o))? + "\n";
        write_output(out, "--output", body.as_bytes())?;
        log.info(format!("wrote {}", out.display()));
    }
    if let Some(out) = &args.save_predictions {
        let join = |v: &[usize]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut csv = String::from(
            "instance,id,image_choice,caption_choice,text_correct,image_correct,scores\n",
        );
        for (n, (item, o)) in scored.iter().enumerate() {
            let scores = o
                .scores
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|s| format!("{s:.6}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join(";");
            csv.push_str(&format!(
                "{n},{},{},{},{},{},{scores}\n",
                csv_field(&item.id),
                join(&o.image_choice),
                join(&o.caption_choice),
                o.text_correct as u8,
                o.image_correct as u8
            ));
        }
        write_output(out, "--save-predictions", csv.as_bytes())?;
        log.info(format!("wrote {}", out.display()));
    }
    Ok(())
}
