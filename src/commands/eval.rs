//! `pyramidclip eval`: maps the arguments into [`crate::eval::EvalOptions`], loads the model,
//! and prints each dataset's result line.

use super::{default_cache_dir, exit, fail, load_model};
use crate::cli::{CbLanguage, EvalArgs, NamesFrom, ZeroshotType};
use crate::data::labels;
use crate::device::Precision;
use crate::eval::{self, EvalOptions, Templates};
use crate::report::{interrupted, Log};

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let mut languages = args.language.clone();
    // Each language once, in the order given.
    let mut seen = Vec::new();
    languages.retain(|l| {
        let new = !seen.contains(l);
        seen.push(*l);
        new
    });
    if languages.len() <= 1 {
        return run_language(
            EvalArgs {
                language: languages,
                ..args
            },
            (0, 1),
            None,
        );
    }
    // CLIP_benchmark runs every language in turn; each needs files of its own.
    for (flag, path) in [
        ("--output", args.output.as_deref()),
        ("--save-predictions", args.save_predictions.as_deref()),
        ("--save-clf", args.save_clf.as_deref()),
    ] {
        if let Some(p) = path.filter(|p| !p.to_string_lossy().contains("{language}")) {
            return Err(fail(
                exit::USAGE,
                format!(
                    "{flag} {}: with several --language values each needs its own file: put {{language}} in the name",
                    p.display()
                ),
            ));
        }
    }
    // The images are encoded once: later languages score the first one's features.
    let memo = std::sync::Arc::new(eval::ImageMemo::default());
    let count = languages.len();
    for (i, l) in languages.into_iter().enumerate() {
        run_language(
            EvalArgs {
                language: vec![l],
                ..args.clone()
            },
            (i, count),
            Some(memo.clone()),
        )?;
    }
    Ok(())
}

/// [`run`] for one `--language` (or none), the `language.0`-th of `language.1`; with several
/// its result lines start with the language's name; `memo`: image features shared with the
/// other languages' runs.
fn run_language(
    args: EvalArgs,
    language: (usize, usize),
    memo: Option<std::sync::Arc<eval::ImageMemo>>,
) -> anyhow::Result<()> {
    let log = Log { quiet: args.quiet };
    let tagged = language.1 > 1;
    // Install the SIGINT/SIGTERM handler before any long step.
    let _ = interrupted();
    let mut shard = super::shard::resolve(args.shard, args.model.local_rank)?;
    let share = args.distributed.then(|| super::shard::RunShare {
        language: language.0,
        languages: language.1,
        ..super::shard::RunShare::new(shard, 0)
    });
    if share.is_some() {
        if args.output_dir.is_some() || args.merge {
            return Err(fail(
                exit::USAGE,
                "--distributed hands out whole runs; --output-dir and --merge go with sharding one run's images (--shard without --distributed)",
            ));
        }
        // The process's rank picks runs, not images: each run it takes sees every image.
        shard.index = 0;
        shard.count = 1;
    }
    let cache_root = args.text_cache.clone().unwrap_or_else(default_cache_dir);
    let mut opts = EvalOptions {
        data_path: args.test_data_path.clone(),
        datasets: eval::dataset_names(&args.test_dataset)?,
        split: args.split.clone(),
        classnames: args.classnames.clone(),
        names_from: match args.classnames_from {
            NamesFrom::Builtin => labels::NamesFrom::Builtin,
            NamesFrom::Upstream => labels::NamesFrom::Upstream,
        },
        language: match (args.language.first().copied(), args.zeroshot_type) {
            (Some(CbLanguage::Ar), _) => labels::Language::Ar,
            (Some(CbLanguage::Cn), _) => labels::Language::Cn,
            (Some(CbLanguage::It), _) => labels::Language::It,
            (Some(CbLanguage::Jp), _) => labels::Language::Jp,
            (_, ZeroshotType::En) => labels::Language::En,
            (_, ZeroshotType::Zh) => labels::Language::Zh,
        },
        templates: match args.templates.as_deref() {
            None => Templates::Imagenet,
            Some("dataset") => Templates::Dataset,
            // CLIP_benchmark's template JSON (`--custom_template_file`).
            Some(p) if p.to_ascii_lowercase().ends_with(".json") => Templates::Json(p.into()),
            Some(p) => Templates::File(p.into()),
        },
        batch_size: args.batch_size_test,
        text_batch_size: args.text_batch_size,
        workers: super::workers(args.workers),
        skip_unreadable: args.skip_unreadable,
        resume: args.resume,
        text_cache: (!args.no_text_cache).then(|| cache_root.clone()),
        progress_dir: cache_root.join("progress"),
        shard,
        output_dir: args.output_dir.clone(),
        merge: args.merge,
        merge_timeout: std::time::Duration::from_secs(args.merge_timeout),
        output: args.output.clone(),
        save_predictions: args.save_predictions.clone(),
        save_clf: args.save_clf.clone(),
        load_clfs: args.load_clfs.clone(),
        dump_classnames: args.dump_classnames,
        dump_templates: args.dump_templates,
        skip: Vec::new(),
        check_memory: true,
        image_memo: memo,
    };
    opts.validate()?;
    super::skip_existing_needs_output(args.skip_existing, args.output.as_deref())?;
    // The architecture flags, then every model's outputs and every dataset, before the (slow)
    // model load.
    // (An open_clip `hf-hub:`/`local-dir:` name is checked with its config when found.)
    for name in args
        .model
        .visual_model
        .iter()
        .filter(|n| crate::hub::schema(n).is_none())
    {
        crate::loader::registry(args.model.model_config.as_deref(), Some(name))
            .map_err(|e| fail(exit::USAGE, format!("--visual-model: {e}")))?;
    }
    if args.model.visual_model.is_empty() {
        crate::loader::registry(args.model.model_config.as_deref(), None)
            .map_err(|e| fail(exit::USAGE, format!("--model-config: {e}")))?;
    }
    let datasets: Vec<&str> = opts.datasets.iter().map(String::as_str).collect();
    let (runs, several) = super::plan_models(
        &args.model,
        &[
            ("--output", args.output.as_deref()),
            ("--save-predictions", args.save_predictions.as_deref()),
            ("--save-clf", args.save_clf.as_deref()),
        ],
        &datasets,
        (crate::results::CLASSIFICATION, opts.language_name()),
        args.skip_existing,
        share,
        log,
    )?;
    if several && (shard.count > 1 || args.output_dir.is_some() || args.merge) {
        return Err(fail(
            exit::USAGE,
            "--shard, --output-dir and --merge evaluate one checkpoint: run each checkpoint's shards on their own",
        ));
    }
    // Per model: the datasets --skip-existing leaves out.
    let skips: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            (r.outputs.iter().zip(&opts.datasets))
                .filter(|(o, _)| o.is_none())
                .map(|(_, d)| d.clone())
                .collect()
        })
        .collect();
    // Datasets no model runs are not even listed.
    opts.skip = opts
        .datasets
        .iter()
        .filter(|d| skips.iter().all(|s| s.contains(d)))
        .cloned()
        .collect();
    if opts.skip.len() == opts.datasets.len() {
        return Ok(());
    }
    let plans = eval::plan(&opts)?;
    for p in &plans {
        for f in &p.empty_folders {
            log.warn(format!("class folder {} holds no images", f.display()));
        }
        for n in &p.notices {
            log.warn(n.clone());
        }
        if p.gifs_left_out > 0 {
            log.warn(super::gifs_warning(&p.root, p.gifs_left_out));
        }
        for (sample, why) in &p.index_skipped {
            log.warn(format!("{sample}: {why}; left out"));
        }
    }
    for (run, skip) in runs.iter().zip(skips) {
        let opts = EvalOptions {
            skip,
            ..opts.clone()
        };
        let tag = tagged.then(|| format!("{}\t", opts.language_name()));
        evaluate_model(&args, &opts, &plans, &run.model, several, tag, log)?;
    }
    Ok(())
}

/// Loads one model (and its fp32 twin for rechecks) and evaluates every planned dataset with
/// it; with several models each summary line starts with the checkpoint's file name.
fn evaluate_model(
    args: &EvalArgs,
    opts: &EvalOptions,
    plans: &[eval::DatasetPlan],
    m: &crate::cli::ModelArgs,
    several: bool,
    tag: Option<String>,
    log: Log,
) -> anyhow::Result<()> {
    let shard = opts.shard;
    let model = load_model(m, shard.local_rank, log)?;
    let sha = super::checkpoint_sha(&model.checkpoint.path)?;
    // A reduced-precision run decides its near-ties with the same weights in fp32.
    let exact = if model.plan.precision != Precision::Fp32 && !args.no_recheck {
        let t = std::time::Instant::now();
        match crate::loader::fp32_twin(
            &model,
            super::native_options(&args.model.run.native, Precision::Fp32),
        ) {
            Ok(twin) => {
                log.info(format!(
                    "built the fp32 twin for near-tie rechecks in {:.1}s (--no-recheck skips them)",
                    t.elapsed().as_secs_f64()
                ));
                Some(twin)
            }
            // The same weights loaded once already: what fails here is memory for a second copy.
            Err(e) => {
                log.warn(format!(
                    "no fp32 recheck of near-ties (building the fp32 copy failed: {}); decisions stay {}",
                    e.to_string().lines().next().unwrap_or_default(),
                    model.plan.precision.name()
                ));
                None
            }
        }
    } else {
        None
    };
    let prefix = super::line_prefix(&model, several) + tag.as_deref().unwrap_or_default();
    eval::evaluate(opts, plans, &model, exact.as_ref(), &sha, log, |r| {
        if r.complete {
            println!(
                "{prefix}{}",
                crate::results::summary_line(&r.info, &r.tally)
            );
            if !r.tally.skipped.is_empty() {
                log.warn(format!(
                    "{} unreadable image(s) skipped; accuracy is over the {} images evaluated",
                    r.tally.skipped.len(),
                    r.tally.images()
                ));
            }
            for p in &r.written {
                log.info(format!("wrote {}", p.display()));
            }
        } else {
            let (t1, t5, _) = r.tally.accuracy();
            log.info(format!(
                "{} shard {}/{}: Prec@1/5 {t1:.2}/{t5:.2} over its {} images (merge the partials for the full result)",
                crate::results::display_name(&r.info.dataset),
                shard.index,
                shard.count,
                r.tally.images()
            ));
        }
    })?;
    Ok(())
}
