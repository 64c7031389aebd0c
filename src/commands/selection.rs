//! `pyramidclip caption-selection`: image-caption selection (Winoground, SugarCREPE).

use super::{
    checkpoint_sha, encode_images_and_texts, exit, fail, load_model, model_fields,
    skip_existing_needs_output, workers, write_output,
};
use crate::cli::{SelectionArgs, SelectionFormat};
use crate::data::selection::{self, Format, SelectionSet};
use crate::features::StreamOptions;
use crate::report::{interrupted, Log};
use crate::results::csv_field;
use crate::selection::{metrics, outcome, Outcome};
use crate::util::path_text;
use std::collections::HashMap;
use std::path::PathBuf;

/// A set's name: SugarCREPE's tasks as CLIP_benchmark names them (`sugar_crepe/TASK`).
fn set_name(set: &SelectionSet) -> String {
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
}

/// CLIP_benchmark's name for this task (result files' `task`, `{task}` in output names).
const TASK: &str = "image_caption_selection";

pub fn run(args: SelectionArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.quiet };
    let _ = interrupted();
    let workers = workers(args.workers);
    skip_existing_needs_output(args.skip_existing, args.output.as_deref())?;
    let format = match args.format {
        SelectionFormat::Auto => None,
        SelectionFormat::SugarCrepe => Some(Format::SugarCrepe),
        SelectionFormat::Winoground => Some(Format::Winoground),
        SelectionFormat::Jsonl => Some(Format::Jsonl),
    };
    // Every set is read and its images found before the (slow) model load.
    let mut files = Vec::new();
    for p in &args.captions {
        files.extend(selection::files(p)?);
    }
    let mut sets = Vec::with_capacity(files.len());
    for f in &files {
        sets.push(selection::read(
            f,
            format,
            args.images_root.as_deref(),
            args.skip_unreadable,
        )?);
    }
    let several = sets.len() > 1;
    if several && args.dataset.is_some() {
        return Err(fail(
            exit::USAGE,
            format!(
                "--dataset names one set, and --captions gives {}",
                sets.len()
            ),
        ));
    }
    let names: Vec<String> = match &args.dataset {
        Some(d) => vec![d.clone()],
        None => sets.iter().map(set_name).collect(),
    };
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(fail(
                exit::USAGE,
                format!("two sets are named {n}: their outputs would collide"),
            ));
        }
    }
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let (runs, several_models) = super::plan_models(
        &args.model,
        &[
            ("--output", args.output.as_deref()),
            ("--save-predictions", args.save_predictions.as_deref()),
        ],
        &names_ref,
        (TASK, "en"),
        args.skip_existing,
        super::shard::RunShare::of(args.distributed, None, args.model.local_rank, 0)?,
        log,
    )?;
    for set in &sets {
        for (_, why) in &set.skipped {
            log.warn(format!("{}: {why}; left out", set.source.display()));
        }
    }
    for model_run in &runs {
        // The sets --skip-existing left in, each with its files.
        let keep: Vec<(usize, &[Option<PathBuf>])> = (model_run.outputs.iter().enumerate())
            .filter_map(|(i, o)| Some((i, o.as_deref()?)))
            .collect();
        let run = Run {
            sets: keep.iter().map(|&(i, _)| &sets[i]).collect(),
            names: keep.iter().map(|&(i, _)| names_ref[i]).collect(),
            outputs: keep.iter().map(|&(_, o)| o).collect(),
        };
        select(&args, &run, &model_run.model, several_models, workers, log)?;
    }
    Ok(())
}

/// The sets one model scores, with their names and files.
struct Run<'a> {
    sets: Vec<&'a SelectionSet>,
    names: Vec<&'a str>,
    /// Per set: its `--output` and `--save-predictions` files.
    outputs: Vec<&'a [Option<PathBuf>]>,
}

/// One model over its sets: each distinct image and caption encoded once, then each set scored,
/// printed and written.
fn select(
    args: &SelectionArgs,
    run: &Run,
    model: &crate::cli::ModelArgs,
    several_models: bool,
    workers: usize,
    log: Log,
) -> anyhow::Result<()> {
    let Run {
        sets,
        names,
        outputs,
    } = run;
    let selection::Union {
        images: samples,
        captions: texts,
        maps,
    } = selection::union(sets);
    let m = load_model(model, None, log)?;
    let sha = checkpoint_sha(&m.checkpoint.path)?;
    for (set, name) in sets.iter().zip(names.iter()) {
        log.info(format!(
            "{name}: {} instances from {} ({})",
            set.items.len(),
            set.source.display(),
            set.format.name()
        ));
    }
    log.info(format!(
        "{} distinct images, {} distinct captions",
        samples.len(),
        texts.len()
    ));
    let t0 = std::time::Instant::now();
    let (enc, txt) = encode_images_and_texts(
        &m,
        samples.clone(),
        &texts,
        StreamOptions {
            batch_size: args.batch_size_test,
            workers,
            skip_unreadable: args.skip_unreadable,
            raw: false,
        },
        args.text_batch_size,
        log,
    )?;
    let txt = txt.to_vec2::<f32>()?;
    let img = enc
        .features
        .to_dtype(candle_core::DType::F32)?
        .to_vec2::<f32>()?;
    let encode_s = t0.elapsed().as_secs_f64();
    // Rows of the images that decoded; an instance with an unreadable image leaves.
    let mut row = vec![None; samples.len()];
    for (j, &i) in enc.kept.iter().enumerate() {
        row[i] = Some(j);
    }
    let unreadable: HashMap<usize, &String> =
        enc.skipped.iter().map(|(i, why)| (*i, why)).collect();
    if !enc.skipped.is_empty() {
        log.warn(format!(
            "{} unreadable image(s): their instances left out",
            enc.skipped.len()
        ));
    }
    for (((set, name), (imgs, caps)), files) in
        sets.iter().zip(names.iter()).zip(&maps).zip(outputs.iter())
    {
        let (output, preds) = (&files[0], &files[1]);
        let mut skipped: Vec<serde_json::Value> = set
            .skipped
            .iter()
            .map(|(id, why)| serde_json::json!({"instance": id, "error": why}))
            .collect();
        let mut scored: Vec<(&selection::Item, Outcome)> = Vec::with_capacity(set.items.len());
        let mut used = std::collections::HashSet::new();
        for item in &set.items {
            let global: Vec<usize> = item.images.iter().map(|&i| imgs[i]).collect();
            if let Some(&g) = global.iter().find(|&&g| row[g].is_none()) {
                let why = unreadable.get(&g).map_or("not decoded", |w| w.as_str());
                skipped.push(serde_json::json!({
                    "instance": item.id,
                    "error": format!("{}: {why}", path_text(&samples[g].path)),
                }));
                continue;
            }
            used.extend(global.iter().copied());
            let images: Vec<&[f32]> = global
                .iter()
                .map(|&g| img[row[g].unwrap_or_default()].as_slice())
                .collect();
            let captions: Vec<&[f32]> = item
                .captions
                .iter()
                .map(|&c| txt[caps[c]].as_slice())
                .collect();
            scored.push((item, outcome(&images, &captions)));
        }
        if scored.is_empty() {
            return Err(fail(
                exit::INPUT,
                format!(
                    "{}: no instance with readable images is left",
                    set.source.display()
                ),
            ));
        }
        let metrics = metrics(scored.iter().map(|(_, o)| o));
        let pct = |k: &str| 100.0 * metrics[k].as_f64().unwrap_or_default();
        println!(
            "{}{name} Caption selection\ttext {:.2}\timage {:.2}\tgroup {:.2}\t({} instances)",
            super::line_prefix(&m, several_models),
            pct("text_acc"),
            pct("image_acc"),
            pct("acc"),
            scored.len()
        );
        if let Some(out) = output {
            let mut o = serde_json::Map::new();
            o.insert("task".into(), TASK.into());
            o.insert("dataset".into(), (*name).into());
            o.extend(model_fields(&m, &sha));
            o.insert("captions".into(), path_text(&set.source).into());
            o.insert("format".into(), set.format.name().into());
            o.insert("num_instances".into(), scored.len().into());
            o.insert("num_images".into(), used.len().into());
            o.insert("num_captions".into(), set.captions.len().into());
            o.insert("metrics".into(), metrics.into());
            o.insert("skipped".into(), skipped.into());
            // Encoding is shared by the sets of one run.
            o.insert("elapsed_s".into(), encode_s.into());
            o.insert("version".into(), crate::results::VERSION.into());
            let body = serde_json::to_string_pretty(&serde_json::Value::Object(o))? + "\n";
            write_output(out, "--output", body.as_bytes())?;
            log.info(format!("wrote {}", out.display()));
        }
        if let Some(out) = preds {
            write_output(
                out,
                "--save-predictions",
                predictions_csv(&scored).as_bytes(),
            )?;
            log.info(format!("wrote {}", out.display()));
        }
    }
    Ok(())
}

/// One row per instance: its id, the choices, whether they are right, the scores image by
/// image (`;` between images).
fn predictions_csv(scored: &[(&selection::Item, Outcome)]) -> String {
    let join = |v: &[usize]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut csv =
        String::from("instance,id,image_choice,caption_choice,text_correct,image_correct,scores\n");
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
    csv
}
