//! `pyramidclip captioning`: CoCa captions of a captioned image set, scored against its
//! captions as CLIP_benchmark's `captioning` task scores them.

use super::{
    caption_format, caption_set_fields, caption_set_name, caption_set_skipped, checkpoint_sha,
    exit, fail, load_model, plan_models, read_caption_set, skip_existing_needs_output, workers,
    write_output, ModelRun,
};
use crate::caption_metrics;
use crate::captioning::{self, GenerateOptions};
use crate::cli::CaptioningArgs;
use crate::data::captions::{self, CaptionSet};
use crate::features::StreamOptions;
use crate::report::{interrupted, Log, Progress};
use crate::util::path_text;

/// CLIP_benchmark's name for this task.
const TASK: &str = "captioning";

/// pycocoevalcap's scores that run Java programs: not computed.
const NOT_COMPUTED: [&str; 2] = ["METEOR", "SPICE"];

pub fn run(args: CaptioningArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.quiet };
    let _ = interrupted();
    let workers = workers(args.workers);
    skip_existing_needs_output(args.skip_existing, args.output.as_deref())?;
    let generate = GenerateOptions {
        num_beams: args.num_beams,
        num_beam_groups: args.num_beam_groups,
        seq_len: args.seq_len,
        min_seq_len: args.min_seq_len,
    };
    generate
        .check()
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    // The captions and images are checked before the (slow) model load.
    let set = read_caption_set(
        &args.set,
        caption_format(args.set.format),
        captions::Pick::default(),
        args.skip_unreadable,
    )?;
    let (dataset, lang) = caption_set_name(&args.set, &set);
    let (runs, several) = plan_models(
        &args.model,
        &[
            ("--output", args.output.as_deref()),
            ("--save-captions", args.save_captions.as_deref()),
        ],
        &[&dataset],
        (TASK, lang),
        args.skip_existing,
        None,
        log,
    )?;
    for (_, why) in &set.skipped {
        log.warn(format!("{}: {why}; left out", args.set.captions.display()));
    }
    for run in runs {
        caption(
            &args, &set, &dataset, &run, several, workers, &generate, log,
        )?;
    }
    Ok(())
}

/// One model's captions of the set: generate, score, print, write its files.
#[allow(clippy::too_many_arguments)]
fn caption(
    args: &CaptioningArgs,
    set: &CaptionSet,
    dataset: &str,
    run: &ModelRun,
    several: bool,
    workers: usize,
    generate: &GenerateOptions,
    log: Log,
) -> anyhow::Result<()> {
    let (output, save_captions) = (&run.files()[0], &run.files()[1]);
    let m = load_model(&run.model, None, log)?;
    let sha = checkpoint_sha(&m.checkpoint.path)?;
    let path = m.checkpoint.path.display();
    let decoder = match crate::loader::caption_decoder(&m) {
        Ok(Some(d)) => d,
        Ok(None) if m.config.family != crate::models::Family::Coca => {
            return Err(fail(
                exit::CHECKPOINT,
                format!(
                    "{path}: {} is not a CoCa model: captioning needs CoCa's captioning decoder",
                    m.name
                ),
            ))
        }
        Ok(None) => {
            return Err(fail(
                exit::CHECKPOINT,
                format!("{path}: no captioning decoder (`text_decoder.*`) in the checkpoint"),
            ))
        }
        Err(e) => return Err(fail(exit::CHECKPOINT, e.to_string())),
    };
    log.info(format!(
        "{dataset}: {} images, {} reference captions from {} ({}); beam search: {} beams in {} groups, at most {} ids",
        set.images.len(),
        set.captions.len(),
        args.set.captions.display(),
        set.format.name(),
        generate.num_beams,
        generate.num_beam_groups,
        generate.seq_len,
    ));
    let t0 = std::time::Instant::now();
    let stream = StreamOptions {
        batch_size: args.batch_size_test,
        workers,
        skip_unreadable: args.skip_unreadable,
        raw: true,
    };
    let mut bar = Progress::new(log.quiet, set.images.len() as u64, "images", "img");
    let (enc, ids) =
        captioning::generate(&m, &decoder, set.images.clone(), stream, generate, |d| {
            bar.set(d as u64)
        })?;
    bar.finish();
    let mut references = vec![Vec::new(); set.images.len()];
    for (c, &i) in set.captions.iter().zip(&set.caption_image) {
        references[i].push(c.clone());
    }
    // The images scored: decoded, and with at least one reference (pycocoevalcap needs one).
    let scored: Vec<usize> = enc
        .kept
        .iter()
        .copied()
        .filter(|&i| !references[i].is_empty())
        .collect();
    if scored.is_empty() {
        return Err(fail(exit::INPUT, "no readable image with captions is left"));
    }
    let mut texts = vec![String::new(); set.images.len()];
    for &i in &enc.kept {
        texts[i] = captioning::caption_text(&ids[i]).map_err(|id| {
            fail(
                exit::RUNTIME,
                format!("generated id {id} is outside the tokenizer's vocabulary"),
            )
        })?;
    }
    let cands: Vec<String> = scored
        .iter()
        .map(|&i| caption_metrics::tokenize(&texts[i]))
        .collect();
    let refs: Vec<Vec<String>> = scored
        .iter()
        .map(|&i| {
            references[i]
                .iter()
                .map(|r| caption_metrics::tokenize(r))
                .collect()
        })
        .collect();
    let scores = caption_metrics::score(&cands, &refs)
        .ok_or_else(|| fail(exit::INPUT, "no image with captions to score"))?;
    let elapsed = t0.elapsed().as_secs_f64();
    let named = scores.named();
    println!(
        "{}{dataset} Captioning\t{}",
        super::line_prefix(&m, several),
        named
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect::<Vec<_>>()
            .join("\t")
    );
    let skipped = caption_set_skipped(set, &enc, log);
    if let Some(out) = output {
        let mut o = caption_set_fields((TASK, dataset), &m, &sha, &args.set.captions, set);
        o.insert("num_images".into(), scored.len().into());
        o.insert(
            "num_references".into(),
            refs.iter().map(Vec::len).sum::<usize>().into(),
        );
        o.insert(
            "generation".into(),
            serde_json::json!({
                "type": "beam_search",
                "num_beams": generate.num_beams,
                "num_beam_groups": generate.num_beam_groups,
                "seq_len": generate.seq_len,
                "min_seq_len": generate.min_seq_len,
            }),
        );
        let metrics: serde_json::Map<String, serde_json::Value> = named
            .iter()
            .map(|&(k, v)| (k.to_string(), v.into()))
            .collect();
        o.insert("metrics".into(), metrics.into());
        o.insert("not_computed".into(), NOT_COMPUTED.to_vec().into());
        o.insert("skipped".into(), skipped.into());
        o.insert("elapsed_s".into(), elapsed.into());
        o.insert("version".into(), crate::results::VERSION.into());
        let body = serde_json::to_string_pretty(&serde_json::Value::Object(o))? + "\n";
        write_output(out, "--output", body.as_bytes())?;
        log.info(format!("wrote {}", out.display()));
    }
    if let Some(out) = save_captions {
        let mut lines = String::new();
        for &i in &enc.kept {
            let row = serde_json::json!({
                "image": path_text(&set.images[i].path),
                "caption": texts[i],
                "ids": ids[i],
                "references": references[i],
            });
            lines.push_str(&serde_json::to_string(&row)?);
            lines.push('\n');
        }
        write_output(out, "--save-captions", lines.as_bytes())?;
        log.info(format!("wrote {}", out.display()));
    }
    Ok(())
}
