//! `pyramidclip retrieval`: zero-shot image-text retrieval on a captioned image set.

use super::{
    caption_format, caption_set_fields, caption_set_name, caption_set_skipped, checkpoint_sha,
    encode_images_and_texts, encode_with_generative_loss, exit, fail, load_model, plan_models,
    read_caption_set, skip_existing_needs_output, workers, write_output, ModelRun,
};
use crate::cli::{Pairing, RetrievalArgs};
use crate::data::captions::{self, Format};
use crate::features::StreamOptions;
use crate::models::Family;
use crate::report::{interrupted, Log};
use crate::results::csv_field;
use crate::retrieval;
use crate::util::path_text;
use candle_core::Tensor;

/// CLIP_benchmark's name for this task (result files' `task`, `{task}` in output names).
const TASK: &str = "zeroshot_retrieval";

pub fn run(args: RetrievalArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.quiet };
    let _ = interrupted();
    let workers = workers(args.workers);
    skip_existing_needs_output(args.skip_existing, args.output.as_deref())?;
    let format = caption_format(args.set.format);
    let mut csv = captions::CsvColumns {
        separator: args.csv_separator,
        ..Default::default()
    };
    if let Some(k) = &args.csv_img_key {
        csv.image = k;
    }
    if let Some(k) = &args.csv_caption_key {
        csv.caption = k;
    }
    if args.loader_workers.is_some() && args.pairing != Pairing::Rows {
        return Err(fail(
            exit::USAGE,
            "--loader-workers applies with --pairing rows (open_clip's validation loader)"
                .to_string(),
        ));
    }
    let loader_workers = args.loader_workers.unwrap_or(retrieval::OPEN_CLIP_WORKERS);
    // A file named with open_clip's column flags is its CSV.
    let csv_flags = args.csv_separator.is_some()
        || args.csv_img_key.is_some()
        || args.csv_caption_key.is_some();
    let format = match format {
        _ if !csv_flags => format,
        None | Some(Format::Csv) if !args.set.captions.is_dir() => Some(Format::Csv),
        _ => {
            return Err(fail(
                exit::USAGE,
                format!(
                    "--csv-separator, --csv-img-key and --csv-caption-key apply to open_clip CSV files, not to {} ({})",
                    args.set.captions.display(),
                    format.map_or("a directory", |f| f.name())
                ),
            ))
        }
    };
    // The captions and images are checked before the (slow) model load.
    let set = read_caption_set(
        &args.set,
        format,
        captions::Pick {
            csv,
            open_clip_workers: (args.pairing == Pairing::Rows).then_some(loader_workers),
            ..Default::default()
        },
        args.skip_unreadable,
    )?;
    let (dataset, lang) = caption_set_name(&args.set, &set);
    let (runs, several) = plan_models(
        &args.model,
        &[
            ("--output", args.output.as_deref()),
            ("--save-ranks", args.save_ranks.as_deref()),
        ],
        &[&dataset],
        (TASK, lang),
        args.skip_existing,
        super::shard::RunShare::of(args.distributed, None, args.model.local_rank, 0)?,
        log,
    )?;
    for (_, why) in &set.skipped {
        log.warn(format!("{}: {why}; left out", args.set.captions.display()));
    }
    for run in runs {
        retrieve(&args, &set, &dataset, &run, several, workers, log)?;
    }
    Ok(())
}

/// One model's retrieval over the set: encode, rank, print, write its files.
fn retrieve(
    args: &RetrievalArgs,
    set: &captions::CaptionSet,
    dataset: &str,
    run: &ModelRun,
    several: bool,
    workers: usize,
    log: Log,
) -> anyhow::Result<()> {
    let (output, save_ranks) = (&run.files()[0], &run.files()[1]);
    let m = load_model(&run.model, None, log)?;
    let sha = checkpoint_sha(&m.checkpoint.path)?;
    log.info(format!(
        "{dataset}: {} images, {} captions from {} ({})",
        set.images.len(),
        set.captions.len(),
        args.set.captions.display(),
        match &set.split {
            Some(split) => format!("{}, split {split}", set.format.name()),
            None => set.format.name().to_string(),
        }
    ));
    // open_clip's evaluation of a CoCa also reports its captioning loss over the rows.
    // (A decoder that cannot be built costs only that figure, with a warning.)
    let decoder = match args.pairing {
        Pairing::Images => None,
        Pairing::Rows if m.config.family != Family::Coca => None,
        Pairing::Rows => match crate::loader::caption_decoder(&m) {
            Ok(Some(d)) => Some(d),
            Ok(None) => {
                log.warn(format!(
                    "{}: no captioning decoder (`text_decoder.*`) in the checkpoint: no val_generative_loss",
                    m.checkpoint.path.display()
                ));
                None
            }
            Err(e) => {
                log.warn(format!("{e}; no val_generative_loss"));
                None
            }
        },
    };
    let t0 = std::time::Instant::now();
    let stream = StreamOptions {
        batch_size: args.batch_size_test,
        workers,
        skip_unreadable: args.skip_unreadable,
        raw: false,
    };
    let (enc, txt, generative) = match &decoder {
        Some(d) => {
            let (enc, txt, loss) =
                encode_with_generative_loss(&m, d, set, stream, args.text_batch_size, log)?;
            (enc, txt, Some(loss))
        }
        None => {
            let (enc, txt) = encode_images_and_texts(
                &m,
                set.images.clone(),
                &set.captions,
                stream,
                args.text_batch_size,
                log,
            )?;
            (enc, txt, None)
        }
    };
    // Images that failed to decode leave with their captions.
    let mut new_index = vec![usize::MAX; set.images.len()];
    for (j, &i) in enc.kept.iter().enumerate() {
        new_index[i] = j;
    }
    let kept_caps: Vec<usize> = (0..set.captions.len())
        .filter(|&c| new_index[set.caption_image[c]] != usize::MAX)
        .collect();
    if enc.kept.is_empty() || kept_caps.is_empty() {
        return Err(fail(exit::INPUT, "no readable image with captions is left"));
    }
    let txt = if kept_caps.len() == set.captions.len() {
        txt
    } else {
        let idx: Vec<u32> = kept_caps.iter().map(|&c| c as u32).collect();
        txt.index_select(&Tensor::new(idx, txt.device())?, 0)?
    };
    let cap_img: Vec<usize> = kept_caps
        .iter()
        .map(|&c| new_index[set.caption_image[c]])
        .collect();
    let mut ks = args.recall_k.clone();
    ks.sort_unstable();
    ks.dedup();
    let t_rank = std::time::Instant::now();
    let scored = match args.pairing {
        Pairing::Images => {
            let ranks = retrieval::ranks(&enc.features, &txt, &cap_img, 1024)?;
            let metrics = retrieval::metrics(&ranks, &ks);
            Scored {
                metrics,
                // text->image: one query per caption; image->text: one per image.
                text_queries: kept_caps.clone(),
                image_queries: enc.kept.iter().map(|&i| (i, None)).collect(),
                text_to_image: ranks.text_to_image,
                image_to_text: ranks.image_to_text,
                logit_scale: None,
                loss: None,
                generative: None,
            }
        }
        Pairing::Rows => {
            // The rows in the order open_clip's loader gives them (the file's, or webdataset
            // shards dealt to its workers); each is one query each way.
            let at: Vec<(usize, usize)> = kept_caps
                .iter()
                .map(|&c| (set.caption_stream[c], set.caption_row[c]))
                .collect();
            let (order, batches) = retrieval::loader_order(&at, args.batch_size_test);
            let idx: Vec<u32> = order.iter().map(|&p| p as u32).collect();
            let txt = txt.index_select(&Tensor::new(idx, txt.device())?, 0)?;
            let row_image: Vec<usize> = order.iter().map(|&p| cap_img[p]).collect();
            let scale = m.logit_scale().unwrap_or_else(|| {
                log.warn(format!(
                    "{}: no logit_scale in the checkpoint; the loss uses 100",
                    m.checkpoint.path.display()
                ));
                100.0
            });
            let r = retrieval::row_paired(&enc.features, &txt, &row_image, scale, &batches, 1024)?;
            let mut metrics = retrieval::row_metrics(&r, &ks);
            let generative = generative.as_ref().map(|row_loss| {
                let losses: Vec<f32> = order.iter().map(|&p| row_loss[kept_caps[p]]).collect();
                let all = losses.iter().map(|&v| v as f64).sum::<f64>() / losses.len() as f64;
                (crate::generative::open_clip_loss(&losses, &batches), all)
            });
            if let Some((loss, all)) = generative {
                metrics.insert("val_generative_loss".into(), loss.into());
                metrics.insert("generative_loss_all_rows".into(), all.into());
            }
            let rows: Vec<usize> = order.iter().map(|&p| kept_caps[p]).collect();
            Scored {
                metrics,
                image_queries: rows
                    .iter()
                    .map(|&c| (set.caption_image[c], Some(c)))
                    .collect(),
                text_queries: rows,
                text_to_image: r.text_to_image,
                image_to_text: r.image_to_text,
                logit_scale: Some(scale),
                loss: Some(r.loss),
                generative,
            }
        }
    };
    log.info(format!(
        "scored {} captions x {} images in {:.2}s",
        cap_img.len(),
        enc.kept.len(),
        t_rank.elapsed().as_secs_f64()
    ));
    let elapsed = t0.elapsed().as_secs_f64();
    let pct = |r: &[u32]| {
        ks.iter()
            .map(|&k| format!("{:.2}", 100.0 * retrieval::recall(r, k)))
            .collect::<Vec<_>>()
            .join("/")
    };
    let kname = ks
        .iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join("/");
    let (mode, mut loss) = match scored.loss {
        Some(l) => (" (rows)", format!("\tclip_val_loss {l:.4}")),
        None => ("", String::new()),
    };
    if let Some((g, _)) = scored.generative {
        loss += &format!("\tval_generative_loss {g:.4}");
    }
    println!(
        "{}{dataset} Retrieval{mode}\ttext->image R@{kname} {}\timage->text R@{kname} {}{loss}",
        super::line_prefix(&m, several),
        pct(&scored.text_to_image),
        pct(&scored.image_to_text)
    );
    let skipped = caption_set_skipped(set, &enc, log);
    if let Some(out) = output {
        let mut o = caption_set_fields((TASK, dataset), &m, &sha, &args.set.captions, set);
        o.insert("num_images".into(), enc.kept.len().into());
        o.insert("num_captions".into(), kept_caps.len().into());
        o.insert(
            "pairing".into(),
            match args.pairing {
                Pairing::Images => "images",
                Pairing::Rows => "rows",
            }
            .into(),
        );
        if let Some(scale) = scored.logit_scale {
            o.insert("logit_scale".into(), scale.into());
            o.insert("loss_batch_size".into(), args.batch_size_test.into());
            if set.format == Format::Wds {
                // The shards' order and batches follow it; a file's do not.
                let workers = args.loader_workers.unwrap_or(retrieval::OPEN_CLIP_WORKERS);
                o.insert("loader_workers".into(), workers.into());
            }
        }
        o.insert("metrics".into(), scored.metrics.into());
        o.insert("skipped".into(), skipped.into());
        o.insert("elapsed_s".into(), elapsed.into());
        o.insert("version".into(), crate::results::VERSION.into());
        let body = serde_json::to_string_pretty(&serde_json::Value::Object(o))? + "\n";
        write_output(out, "--output", body.as_bytes())?;
        log.info(format!("wrote {}", out.display()));
    }
    if let Some(out) = save_ranks {
        let mut csv = String::from("direction,query,image,caption,rank\n");
        for (q, (&c, &r)) in scored
            .text_queries
            .iter()
            .zip(&scored.text_to_image)
            .enumerate()
        {
            let img = path_text(&set.images[set.caption_image[c]].path);
            csv.push_str(&format!(
                "text_to_image,{q},{},{},{r}\n",
                csv_field(&img),
                csv_field(&set.captions[c])
            ));
        }
        for (q, (&(i, c), &r)) in scored
            .image_queries
            .iter()
            .zip(&scored.image_to_text)
            .enumerate()
        {
            let img = path_text(&set.images[i].path);
            let cap = c.map_or(String::new(), |c| csv_field(&set.captions[c]));
            csv.push_str(&format!(
                "image_to_text,{q},{},{cap},{r}\n",
                csv_field(&img)
            ));
        }
        write_output(out, "--save-ranks", csv.as_bytes())?;
        log.info(format!("wrote {}", out.display()));
    }
    Ok(())
}

/// The ranks of one protocol, with what each query was.
struct Scored {
    metrics: serde_json::Map<String, serde_json::Value>,
    /// The caption of each text->image query (indices into the set's captions).
    text_queries: Vec<usize>,
    /// The image of each image->text query, and its caption where a row pairs them.
    image_queries: Vec<(usize, Option<usize>)>,
    text_to_image: Vec<u32>,
    image_to_text: Vec<u32>,
    /// What scaled the logits, and the contrastive loss (`--pairing rows`).
    logit_scale: Option<f32>,
    loss: Option<f64>,
    /// CoCa's generative loss as open_clip reports it, and over every row.
    generative: Option<(f64, f64)>,
}
