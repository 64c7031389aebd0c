//! `pyramidclip linear-probe`: logistic regression on frozen image features (the CLIP paper's
//! linear-probe protocol), train/test (and validation) splits as ImageFolders, CLIP_benchmark
//! webdataset layouts or shard lists.

use super::{
    checkpoint_sha, default_cache_dir, exit, fail, load_model, model_fields, plan_models,
    skip_existing_needs_output, workers, write_output, ModelRun,
};
use crate::cli::{LinearProbeArgs, ProbeFit};
use crate::data::labelled::{self, Split};
use crate::features::{self, Encoded, FeatureCache, StreamOptions};
use crate::lbfgs::Stop;
use crate::loader::LoadedModel;
use crate::probe::{self, Dataset, FitOptions};
use crate::report::{interrupted, Log, Progress};
use crate::results::csv_field;
use crate::util::path_text;

/// The CLIP linear-probe example's C.
const DEFAULT_C: f64 = 0.316;
/// scikit-learn's default tolerance.
const TOL: f64 = 1e-4;

pub fn run(args: LinearProbeArgs) -> anyhow::Result<()> {
    let log = Log { quiet: args.quiet };
    let _ = interrupted();
    if let Some(c) = args.c {
        if !(c.is_finite() && c > 0.0) {
            return Err(fail(exit::USAGE, format!("--c must be positive (got {c})")));
        }
    }
    if let Some(f) = args.val_fraction {
        if !(f > 0.0 && f < 1.0) {
            return Err(fail(
                exit::USAGE,
                format!("--val-fraction must be between 0 and 1 (got {f})"),
            ));
        }
    }
    let adamw = args.fit == ProbeFit::Adamw;
    let has_val = args.val.is_some() || args.val_fraction.is_some() || args.val_split.is_some();
    if adamw {
        if args.c.is_some() {
            return Err(fail(
                exit::USAGE,
                "--c is --fit lbfgs's: --fit adamw searches a weight decay on a validation set (--val, --val-split, --val-fraction or --c-search), or takes --weight-decay",
            ));
        }
        if !(args.lr.is_finite() && args.lr > 0.0) {
            return Err(fail(
                exit::USAGE,
                format!("--lr must be positive (got {})", args.lr),
            ));
        }
        match args.weight_decay {
            Some(w) if !(w.is_finite() && w >= 0.0) => {
                return Err(fail(
                    exit::USAGE,
                    format!("--weight-decay must be 0 or more (got {w})"),
                ))
            }
            Some(_) if has_val || args.c_search => {
                return Err(fail(
                    exit::USAGE,
                    "--weight-decay with a validation set: the search picks the decay there",
                ))
            }
            _ => {}
        }
    } else if args.weight_decay.is_some() {
        return Err(fail(
            exit::USAGE,
            "--weight-decay is --fit adamw's (--fit lbfgs takes --c)",
        ));
    }
    if !adamw && !args.c_search && has_val {
        return Err(fail(
            exit::USAGE,
            "--val, --val-split and --val-fraction choose C: they need --c-search",
        ));
    }
    let vtab = match args.dataset.as_deref() {
        Some(d) if crate::data::vtab::from_tfds(d) => Some(d),
        Some(d) => {
            return Err(fail(
                exit::USAGE,
                format!("--dataset {d}: only TFDS datasets (vtab/NAME, tfds/NAME) are named; other sets are found from --train's layout"),
            ))
        }
        None => None,
    };
    if vtab.is_some() && args.val.is_some() && args.val_split.is_none() {
        return Err(fail(
            exit::USAGE,
            "--val with --dataset: name the VTAB split with --val-split (--val is its data_dir)",
        ));
    }
    // A webdataset layout holds its test split next to the training one.
    let test_path = match &args.test {
        Some(t) => t.clone(),
        None if vtab.is_some() => args.train.clone(),
        None if crate::data::wds::has_split(&args.train, "test")
            || !crate::data::cifar::find_all(&args.train).is_empty()
            || crate::data::listed::find(&args.train, None).is_some() =>
        {
            args.train.clone()
        }
        None => {
            return Err(fail(
                exit::USAGE,
                "--test is needed (it may be left out when --train is a webdataset layout with a test split, or a torchvision download with a training split: CIFAR, Food-101, DTD, Pets, Aircraft, Flowers102, Cars, GTSRB, Country211, RenderedSST2, MNIST, STL-10, VOC2007, PCAM)",
            ))
        }
    };
    let workers = workers(args.workers);
    skip_existing_needs_output(args.skip_existing, args.output.as_deref())?;
    // Every split is listed before the (slow) model load.
    let skip = args.skip_unreadable;
    let open_vtab = |d: &str, path: &std::path::Path, split: &str, flag: &str| {
        labelled::open_vtab(path, d, split, flag).map_err(|e| match e {
            crate::data::Error::Labels(msg) => fail(exit::USAGE, msg),
            e => e.into(),
        })
    };
    let mut train = match vtab {
        Some(d) => open_vtab(d, &args.train, &args.train_split, "--train")?,
        None => labelled::open(&args.train, "train", "--train", None, skip)?,
    };
    let classes = train.classes.clone();
    let listed = train.samples.len();
    // --fit adamw encodes every training image and picks from their features, as
    // CLIP_benchmark does.
    if let Some(k) = args.fewshot().filter(|_| !adamw) {
        let labels: Vec<usize> = train.samples.iter().map(|s| s.label).collect();
        let pick = probe::fewshot(&labels, k, args.seed);
        train.samples = pick.iter().map(|&i| train.samples[i].clone()).collect();
        let mut per_class = vec![0usize; classes.len()];
        labels.iter().for_each(|&y| per_class[y] += 1);
        let short = per_class.iter().filter(|&&n| n < k).count();
        if short > 0 {
            log.warn(format!(
                "--fewshot-k {k}: {short} of {} classes have fewer training images (all of them used)",
                classes.len()
            ));
        }
        log.info(format!(
            "few-shot: {} of {listed} training images ({k} per class, seed {})",
            train.samples.len(),
            args.seed
        ));
    }
    let listed_labels: Vec<usize> = train.samples.iter().map(|s| s.label).collect();
    one_class(&listed_labels, &classes)?;
    let (test, val) = match vtab {
        Some(d) => (
            open_vtab(d, &test_path, &args.test_split, "--test")?,
            args.val_split
                .as_deref()
                .map(|s| open_vtab(d, args.val.as_deref().unwrap_or(&args.train), s, "--val"))
                .transpose()?,
        ),
        None => (
            labelled::open(&test_path, "test", "--test", Some(&classes), skip)?,
            args.val
                .as_deref()
                .map(|v| labelled::open(v, "val", "--val", Some(&classes), skip))
                .transpose()?,
        ),
    };
    let mut skipped = Vec::new();
    for s in [Some(&train), Some(&test), val.as_ref()]
        .into_iter()
        .flatten()
    {
        for e in &s.empty_folders {
            log.warn(format!("class folder {} holds no images", e.display()));
        }
        if s.gifs_left_out > 0 {
            log.warn(super::gifs_warning(&s.root, s.gifs_left_out));
        }
        for (what, why) in &s.skipped {
            log.warn(format!("skipped {what}: {why}"));
            skipped.push(serde_json::json!({"path": what, "error": why}));
        }
    }

    // A layout or folder by its directory's name; shards by the folder that holds them; a
    // CIFAR download by its dataset name (its folder is torchvision's, the root anything).
    let named = if test.kind == "shards" {
        &test.root
    } else {
        &test_path
    };
    let name = match crate::data::cifar::find(&test_path, None) {
        _ if vtab.is_some() => vtab.unwrap_or_default().to_string(),
        Some((kind, _)) if test.kind == "cifar" => kind.dataset().to_string(),
        // The other downloads' kind is their dataset's name.
        _ if !matches!(test.kind, "folder" | "wds" | "shards" | "cifar") => test.kind.to_string(),
        _ => named
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "test".into()),
    };
    let (runs, several) = plan_models(
        &args.model,
        &[
            ("--output", args.output.as_deref()),
            ("--save-predictions", args.save_predictions.as_deref()),
        ],
        &[&name],
        ("linear_probe", "en"),
        args.skip_existing,
        super::shard::RunShare::of(args.distributed, None, args.model.local_rank, args.seed)?,
        log,
    )?;
    let splits = Splits {
        train,
        test,
        val,
        classes,
        test_path,
        skipped,
    };
    for run in &runs {
        probe_model(&args, &splits, &name, run, several, workers, log)?;
    }
    Ok(())
}

/// The splits as listed (once for every model), and what was left out while listing.
struct Splits {
    train: Split,
    test: Split,
    val: Option<Split>,
    classes: Vec<String>,
    test_path: std::path::PathBuf,
    skipped: Vec<serde_json::Value>,
}

/// One model's probe: encode (or read cached) features, fit, score, print, write its files.
fn probe_model(
    args: &LinearProbeArgs,
    splits: &Splits,
    name: &str,
    run: &ModelRun,
    several: bool,
    workers: usize,
    log: Log,
) -> anyhow::Result<()> {
    let Splits {
        train,
        test,
        val,
        classes,
        test_path,
        ..
    } = splits;
    let mut skipped = splits.skipped.clone();
    let (output, save_predictions) = (&run.files()[0], &run.files()[1]);
    let m = load_model(&run.model, None, log)?;
    let sha = checkpoint_sha(&m.checkpoint.path)?;
    let cache = (!args.no_feature_cache).then(|| FeatureCache {
        dir: args
            .feature_cache
            .clone()
            .unwrap_or_else(|| default_cache_dir().join("features")),
    });
    let stream = StreamOptions {
        batch_size: args.batch_size_test,
        workers,
        skip_unreadable: args.skip_unreadable,
        raw: true,
    };
    let t0 = std::time::Instant::now();
    let mut encode = |s: &Split, name: &str| -> anyhow::Result<(Dataset, Vec<usize>)> {
        let enc = encoded(&m, &sha, s, name, stream, cache.as_ref(), log)?;
        for (i, why) in &enc.skipped {
            skipped.push(serde_json::json!({"path": s.samples[*i].name(), "error": why}));
        }
        let (n, dim) = enc.features.dims2()?;
        let mut d = Dataset::new(
            enc.features.flatten_all()?.to_vec1()?,
            enc.kept.iter().map(|&i| s.samples[i].label).collect(),
            dim,
        );
        debug_assert_eq!(d.y.len(), n);
        if args.normalize {
            d.l2_normalize();
        }
        Ok((d, enc.kept))
    };
    let (train_d, _) = encode(train, "train")?;
    let (test_d, test_kept) = encode(test, "test")?;
    let val_d = match &val {
        Some(v) => Some(encode(v, "val")?.0),
        None => None,
    };
    if train_d.is_empty() || test_d.is_empty() {
        return Err(fail(
            exit::INPUT,
            "no readable training or test image is left",
        ));
    }
    let k = classes.len();
    one_class(&train_d.y, classes)?;
    let fitted = match args.fit {
        ProbeFit::Lbfgs => fit_lbfgs(args, train_d, val_d, &test_d, k, log)?,
        ProbeFit::Adamw => fit_adamw(args, train_d, val_d, &test_d, classes, log)?,
    };
    let top = &fitted.top;
    let (acc1, acc5, mpc) = probe::accuracy(top, &test_d.y, k);
    // CLIP_benchmark reports no top-5 when the test labels stop below 5 (its --fit).
    let acc5 = (args.fit == ProbeFit::Lbfgs || test_d.y.iter().any(|&y| y >= 5)).then_some(acc5);
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "{}{name} Linear probe\t{}\tacc1/acc5 {:.2}/{}\tmean per-class recall {:.2}",
        super::line_prefix(&m, several),
        fitted.label,
        100.0 * acc1,
        acc5.map_or("nan".to_string(), |a| format!("{:.2}", 100.0 * a)),
        100.0 * mpc
    );
    if let Some(out) = &output {
        let mut o = serde_json::Map::new();
        o.insert("task".into(), "linear_probe".into());
        o.insert("dataset".into(), name.into());
        o.extend(model_fields(&m, &sha));
        o.insert("train".into(), path_text(&args.train).into());
        o.insert("test".into(), path_text(test_path).into());
        o.insert(
            "layout".into(),
            serde_json::json!({"train": train.kind, "test": test.kind, "val": val.as_ref().map(|v| v.kind)}),
        );
        if args.dataset.is_some() {
            // The VTAB splits read (CLIP_benchmark's --train_split / --val_split, and test).
            o.insert(
                "splits".into(),
                serde_json::json!({"train": args.train_split, "test": args.test_split, "val": args.val_split}),
            );
        }
        o.insert("fewshot_k".into(), args.fewshot().into());
        if args.fewshot().is_some() || args.fit == ProbeFit::Adamw {
            o.insert("seed".into(), args.seed.into());
        }
        o.insert(
            "fit".into(),
            match args.fit {
                ProbeFit::Lbfgs => "lbfgs",
                ProbeFit::Adamw => "adamw",
            }
            .into(),
        );
        o.extend(fitted.fields);
        o.insert("classes".into(), classes.clone().into());
        o.insert("num_test".into(), test_d.len().into());
        let mut metrics = serde_json::Map::new();
        metrics.insert("lp_acc1".into(), acc1.into());
        metrics.insert("lp_acc5".into(), acc5.into());
        metrics.insert("lp_mean_per_class_recall".into(), mpc.into());
        metrics.extend(fitted.metrics);
        o.insert("metrics".into(), metrics.into());
        o.insert("skipped".into(), skipped.clone().into());
        o.insert("elapsed_s".into(), elapsed.into());
        o.insert("version".into(), crate::results::VERSION.into());
        let body = serde_json::to_string_pretty(&serde_json::Value::Object(o))? + "\n";
        write_output(out, "--output", body.as_bytes())?;
        log.info(format!("wrote {}", out.display()));
    }
    if let Some(out) = &save_predictions {
        let mut csv = String::from("path,label,pred1\n");
        for ((&i, t), &y) in test_kept.iter().zip(top).zip(&test_d.y) {
            csv.push_str(&format!(
                "{},{y},{}\n",
                csv_field(&path_text(&test.samples[i].path)),
                t[0]
            ));
        }
        write_output(out, "--save-predictions", csv.as_bytes())?;
        log.info(format!("wrote {}", out.display()));
    }
    Ok(())
}

/// A fitted probe's test predictions and what the result says about the fit.
struct Fitted {
    /// Per test image, its 5 best classes.
    top: Vec<Vec<u32>>,
    /// The printed line's fit part (`C 0.3160`).
    label: String,
    /// The result JSON's fields of the fit.
    fields: serde_json::Map<String, serde_json::Value>,
    /// Fields the fit adds to the JSON's `metrics` (CLIP_benchmark's, for --fit adamw).
    metrics: serde_json::Map<String, serde_json::Value>,
}

/// The CLIP paper's fit: C given, or searched on a validation set, then refitted on train +
/// validation.
fn fit_lbfgs(
    args: &LinearProbeArgs,
    train_d: Dataset,
    val_d: Option<Dataset>,
    test_d: &Dataset,
    k: usize,
    log: Log,
) -> anyhow::Result<Fitted> {
    let mut trials = Vec::new();
    let (c, fit_data, num_val) = if args.c_search {
        let (fit_on, held) = match val_d {
            Some(v) => (train_d, v),
            None => held_out(&train_d, args.val_fraction, "--c-search")?,
        };
        log.info(format!(
            "C search: {} training and {} validation images",
            fit_on.len(),
            held.len()
        ));
        let (c, t) = probe::search_c(&fit_on, &held, k, args.max_iter, TOL, |t| {
            log.info(format!(
                "  C={:<10.4e} val top-1 {:.2} ({} iterations)",
                t.c,
                100.0 * t.val_top1,
                t.iterations
            ))
        })?;
        trials = t;
        log.info(format!(
            "C search: chose C={c:.4e}; refitting on train + validation"
        ));
        let all = fit_on.concat(&held);
        let nv = held.len();
        (c, all, nv)
    } else {
        (args.c.unwrap_or(DEFAULT_C), train_d, 0)
    };
    let fit = probe::fit(
        &fit_data,
        k,
        FitOptions {
            c,
            max_iter: args.max_iter,
            tol: TOL,
        },
        None,
    )?;
    match fit.stop {
        Stop::Gradient | Stop::Reduction => {}
        Stop::MaxIter => log.warn(format!(
            "L-BFGS stopped at --max-iter {} before converging (raise --max-iter)",
            args.max_iter
        )),
        Stop::MaxFun => log.warn(
            "L-BFGS stopped after 15,000 loss evaluations before converging (as scipy's maxfun)",
        ),
        Stop::LineSearch => log.warn(
            "L-BFGS: the line search found no lower loss; the fit is the last point reached (scipy's ABNORMAL_TERMINATION_IN_LNSRCH)",
        ),
    }
    let mut o = serde_json::Map::new();
    o.insert("C".into(), c.into());
    o.insert("c_search".into(), args.c_search.into());
    o.insert(
        "c_trials".into(),
        trials
            .iter()
            .map(|t| serde_json::json!({"C": t.c, "val_acc1": t.val_top1, "iterations": t.iterations}))
            .collect::<Vec<_>>()
            .into(),
    );
    o.insert("normalize".into(), args.normalize.into());
    o.insert("max_iter".into(), args.max_iter.into());
    o.insert("iterations".into(), fit.iterations.into());
    o.insert("converged".into(), fit.stop.converged().into());
    o.insert("stop".into(), fit.stop.name().into());
    o.insert("loss".into(), fit.loss.into());
    o.insert("num_train".into(), (fit_data.len() - num_val).into());
    o.insert("num_val".into(), num_val.into());
    Ok(Fitted {
        top: fit.topk(test_d, 5),
        label: format!("C {c:.4}"),
        fields: o,
        metrics: Default::default(),
    })
}

/// `--val-fraction` (default 0.2) of each training class held out: (train, validation).
fn held_out(
    train_d: &Dataset,
    fraction: Option<f64>,
    flag: &str,
) -> anyhow::Result<(Dataset, Dataset)> {
    let (tr, va) = probe::split_validation(&train_d.y, fraction.unwrap_or(0.2));
    if va.is_empty() {
        return Err(fail(
            exit::INPUT,
            format!("{flag}: no class of --train has two images to hold one out; pass --val"),
        ));
    }
    Ok((train_d.select(&tr), train_d.select(&va)))
}

/// CLIP_benchmark's fit ([`crate::adamw_probe`]): features L2-normalised in f32; with a
/// validation set (or --c-search) its weight-decay search, else --weight-decay (0).
fn fit_adamw(
    args: &LinearProbeArgs,
    mut train_d: Dataset,
    val_d: Option<Dataset>,
    test_d: &Dataset,
    classes: &[String],
    log: Log,
) -> anyhow::Result<Fitted> {
    use crate::adamw_probe::{self, Options};
    let searching = args.c_search || val_d.is_some() || args.val_fraction.is_some();
    let mut val_d = val_d;
    if searching && val_d.is_none() {
        let (tr, va) = held_out(&train_d, args.val_fraction, "--fit adamw")?;
        (train_d, val_d) = (tr, Some(va));
    }
    adamw_probe::normalize_rows(&mut train_d);
    if let Some(v) = val_d.as_mut() {
        adamw_probe::normalize_rows(v);
    }
    let mut test_n = test_d.clone();
    adamw_probe::normalize_rows(&mut test_n);
    let o = Options {
        lr: args.lr,
        epochs: args.epochs,
        batch_size: args.fit_batch_size,
        seed: args.seed,
        fewshot_k: args.fewshot(),
        weight_decay: args.weight_decay.unwrap_or(0.0),
    };
    log.info(format!(
        "AdamW probe (CLIP_benchmark's): {} training{} images, lr {}, {} epochs, batches of {}, seed {}",
        train_d.len(),
        val_d
            .as_ref()
            .map_or(String::new(), |v| format!(" and {} validation", v.len())),
        o.lr,
        o.epochs,
        o.batch_size,
        o.seed
    ));
    let out = adamw_probe::evaluate(&train_d, val_d.as_ref(), &o).map_err(|e| match e {
        // The classes by name, and what to do instead.
        adamw_probe::Error::FewShot { k, short } => {
            let short: Vec<String> = short
                .iter()
                .map(|&(c, n)| format!("{:?} has {n}", classes.get(c).map_or("?", String::as_str)))
                .collect();
            fail(
                exit::INPUT,
                format!(
                    "--fewshot-k {k}: too few training images ({}); CLIP_benchmark gives no result then (--fit lbfgs trains on all of such a class)",
                    short.join(", ")
                ),
            )
        }
        e => fail(exit::INPUT, e.to_string()),
    })?;
    for t in &out.trials {
        log.info(format!(
            "  weight decay {:<10.4e} val top-1 {:.2}",
            t.weight_decay,
            100.0 * t.val_acc1
        ));
    }
    if searching {
        log.info(format!(
            "weight decay search: chose {:.4e}; trained on {} images",
            out.weight_decay, out.num_trained
        ));
    }
    let mut f = serde_json::Map::new();
    f.insert("weight_decay".into(), out.weight_decay.into());
    f.insert("wd_search".into(), searching.into());
    f.insert(
        "wd_trials".into(),
        out.trials
            .iter()
            .map(|t| serde_json::json!({"weight_decay": t.weight_decay, "val_acc1": t.val_acc1}))
            .collect::<Vec<_>>()
            .into(),
    );
    f.insert("lr".into(), o.lr.into());
    f.insert("epochs".into(), o.epochs.into());
    f.insert("fit_batch_size".into(), o.batch_size.into());
    f.insert("normalize".into(), true.into());
    let num_val = val_d.as_ref().map_or(0, |v| v.len());
    f.insert("num_train".into(), out.train_rows.len().into());
    f.insert("num_val".into(), num_val.into());
    let mut metrics = serde_json::Map::new();
    metrics.insert("weight_decay".into(), out.weight_decay.into());
    metrics.insert("epochs".into(), o.epochs.into());
    metrics.insert("seed".into(), o.seed.into());
    metrics.insert(
        "fewshot_k".into(),
        o.fewshot_k.map_or(-1, |k| k as i64).into(),
    );
    metrics.insert("normalized".into(), true.into());
    Ok(Fitted {
        top: out.model.topk(&test_n, 5),
        label: format!("weight decay {:.4e}", out.weight_decay),
        fields: f,
        metrics,
    })
}

/// An error when every training label is the same class (scikit-learn refuses such a fit).
fn one_class(labels: &[usize], classes: &[String]) -> anyhow::Result<()> {
    match labels.first() {
        Some(&y) if labels.iter().all(|&l| l == y) => Err(fail(
            exit::INPUT,
            format!(
                "--train: every training image is of class {:?}; a probe needs two classes or more",
                classes[y]
            ),
        )),
        _ => Ok(()),
    }
}

/// A split's raw features, from the cache or encoded (and then cached).
fn encoded(
    m: &LoadedModel,
    sha: &str,
    s: &Split,
    name: &str,
    opts: StreamOptions,
    cache: Option<&FeatureCache>,
    log: Log,
) -> anyhow::Result<Encoded> {
    let key = FeatureCache::key(m, sha, &s.samples, opts);
    if let Some(enc) = cache.and_then(|c| c.load(&key)) {
        if enc.kept.len() + enc.skipped.len() == s.samples.len() {
            log.info(format!(
                "{}: {} image features loaded from cache",
                name,
                enc.kept.len()
            ));
            return Ok(enc);
        }
    }
    log.info(format!("{name}: encoding {} images", s.samples.len()));
    let mut bar = Progress::new(log.quiet, s.samples.len() as u64, name, "img");
    let enc = features::stream_samples(m, s.samples.clone(), opts, |d| bar.set(d as u64))?;
    bar.finish();
    if let Some(c) = cache {
        let mut meta = std::collections::HashMap::new();
        meta.insert("model".to_string(), m.name.clone());
        meta.insert("engine".to_string(), m.plan.engine.name().to_string());
        meta.insert("precision".to_string(), m.plan.precision.name().to_string());
        meta.insert(
            "dtype".to_string(),
            crate::engine::dtype_name(m.plan.dtype).to_string(),
        );
        meta.insert("device".to_string(), crate::device::describe(&m.device));
        meta.insert("checkpoint_sha256".to_string(), sha.to_string());
        meta.insert("images".to_string(), s.samples.len().to_string());
        match c.store(&key, &enc, meta) {
            Ok(p) => log.info(format!("{name}: features cached in {}", p.display())),
            Err(e) => log.warn(format!("cannot cache features in {}: {e}", c.dir.display())),
        }
    }
    Ok(enc)
}
