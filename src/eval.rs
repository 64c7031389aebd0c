//! Zero-shot evaluation of a loaded model on one or more image folders (the upstream
//! `main.py --evaluate`): plans every dataset first (so a bad path fails before the slow model
//! load), builds or loads the class vectors, streams the images through the image encoder with
//! progress saved for `--resume`, and writes results, shard partials and merges.

use crate::data::labels::JsonPrompts;
use crate::data::{self, Sample};
use crate::loader::LoadedModel;
use crate::recheck::Recheck;
use crate::report::{interrupted, Log, Progress};
use crate::results::{self, Partial, RunInfo, PARTIAL_KIND, VERSION};
use crate::zeroshot::{self, CacheLock, Prediction, Tally, TextCache};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or combination of flags that cannot work (exit 2).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Data(#[from] data::Error),
    /// An image that cannot be decoded, without `--skip-unreadable`.
    #[error("{0} (pass --skip-unreadable to skip unreadable images)")]
    Image(crate::preprocess::Error),
    #[error("{0}")]
    Interrupted(String),
    /// The batch does not fit in memory (exit 1, with the advice to shrink it).
    #[error("{0}")]
    OutOfMemory(String),
    #[error("{0}")]
    Runtime(String),
    /// A `--load-clfs` file that is not a classifier for this model and dataset (exit 3).
    #[error("{0}")]
    Classifier(String),
    #[error(transparent)]
    Results(#[from] results::Error),
    #[error(transparent)]
    Zeroshot(#[from] zeroshot::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Which slice of the data this process evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
    /// The process's GPU on its node.
    pub local_rank: Option<usize>,
}

impl Shard {
    pub fn single() -> Self {
        Shard {
            index: 0,
            count: 1,
            local_rank: None,
        }
    }
    /// Positions of the sorted sample list this shard owns: every count-th one.
    pub fn positions(&self, total: usize) -> Vec<usize> {
        (self.index..total).step_by(self.count).collect()
    }
}

/// Where the prompt templates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Templates {
    /// The 80 ImageNet templates (what the reference uses for every dataset).
    Imagenet,
    /// The dataset's own templates.
    Dataset,
    File(PathBuf),
    /// CLIP_benchmark's template JSON (`--custom_template_file`): per dataset, templates or
    /// class-specific prompts.
    Json(PathBuf),
}

/// Everything an evaluation needs besides the model.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Dataset root: DIR/val when it exists, else DIR; with several datasets DIR/<name> (or DIR
    /// when it holds the dataset's torchvision download).
    pub data_path: PathBuf,
    pub datasets: Vec<String>,
    /// The split of a webdataset layout (None: test; named only for such layouts).
    pub split: Option<String>,
    pub classnames: Option<PathBuf>,
    /// Built-in class names: ours or upstream's lists.
    pub names_from: data::labels::NamesFrom,
    /// The prompts' language (ImageNet and its variants only for zh).
    pub language: data::labels::Language,
    pub templates: Templates,
    pub batch_size: usize,
    pub text_batch_size: usize,
    /// Decode threads.
    pub workers: usize,
    pub skip_unreadable: bool,
    pub resume: bool,
    /// Where class vectors are cached; None: neither read nor written.
    pub text_cache: Option<PathBuf>,
    /// Where interrupted runs keep their progress.
    pub progress_dir: PathBuf,
    pub shard: Shard,
    /// Where shard partials go.
    pub output_dir: Option<PathBuf>,
    /// Rank 0 waits for every partial and writes the merged result.
    pub merge: bool,
    pub merge_timeout: std::time::Duration,
    /// The result JSON; a CLIP_benchmark template (`{dataset}_{model}.json`) names one file per
    /// dataset, a plain path is suffixed `-<dataset>` when there are several.
    pub output: Option<PathBuf>,
    pub save_predictions: Option<PathBuf>,
    /// Where each dataset's classifier is written (CLIP_benchmark's `--save_clf`; the output
    /// placeholders).
    pub save_clf: Option<PathBuf>,
    /// Classifiers read and averaged in place of encoding the prompts (`--load_clfs`).
    pub load_clfs: Vec<PathBuf>,
    /// The class names and templates written into the result JSON (CLIP_benchmark's
    /// `--dump_classnames`, `--dump_templates`).
    pub dump_classnames: bool,
    pub dump_templates: bool,
    /// Datasets left out, neither listed by [`plan`] nor evaluated (`--skip-existing`: their
    /// `--output` exists).
    pub skip: Vec<String>,
    /// Checks each batch's activations against the available memory first (the CPU).
    pub check_memory: bool,
    /// Image features kept from an earlier run over the same images with the same model
    /// (`--language` lists: each language scores the features the first one computed).
    pub image_memo: Option<Arc<ImageMemo>>,
}

/// Image features computed once and scored again by later runs in the same process (several
/// `--language` values): per dataset run, the batches in order with their features. Only
/// complete runs are kept, and only without a fp32 recheck (which needs the pixels).
#[derive(Default)]
pub struct ImageMemo {
    runs: std::sync::Mutex<HashMap<String, Arc<Vec<MemoBatch>>>>,
}

impl std::fmt::Debug for ImageMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.runs.lock().map_or(0, |r| r.len());
        write!(f, "ImageMemo({n} runs)")
    }
}

/// One batch as the image stream delivered it: its samples, those it skipped, the features.
struct MemoBatch {
    indices: Vec<usize>,
    skipped: Vec<(usize, String)>,
    feats: Tensor,
}

/// One dataset, listed and labelled.
pub struct DatasetPlan {
    pub name: String,
    pub root: PathBuf,
    pub samples: Vec<Sample>,
    pub classnames: Vec<String>,
    pub templates: Vec<String>,
    /// Class folders that hold no image.
    pub empty_folders: Vec<PathBuf>,
    /// GIFs in the class folders, left out as torchvision's ImageFolder leaves them out.
    pub gifs_left_out: usize,
    /// Webdataset input: each sample's shard (sharded runs split by shard).
    pub shard_of: Option<Vec<usize>>,
    /// Webdataset samples left out while indexing (`--skip-unreadable`): `shard/key`, why.
    pub index_skipped: Vec<(String, String)>,
    /// The webdataset layout's split that was read.
    pub split: Option<String>,
    /// A multi-label set's positive classes per sample (VOC2007's images), scored by mean
    /// average precision.
    pub targets: Option<Vec<Vec<u32>>>,
    /// Each class's own prompts (a template JSON's class-specific entry), used instead of
    /// `templates` (then empty).
    pub class_prompts: Option<Vec<Vec<String>>>,
    /// What the user should know about how the data was read (a TFDS version other than the
    /// one asked for).
    pub notices: Vec<String>,
}

impl DatasetPlan {
    /// The prompts as the class-vector cache and `--resume` identify them.
    fn prompt_key(&self) -> Vec<String> {
        match &self.class_prompts {
            None => self.templates.clone(),
            Some(per) => self
                .classnames
                .iter()
                .zip(per)
                .flat_map(|(c, ps)| ps.iter().map(move |p| format!("{c}\u{0}{p}")))
                .collect(),
        }
    }

    /// How many prompts encode the class vectors.
    fn prompt_count(&self) -> usize {
        match &self.class_prompts {
            None => self.classnames.len() * self.templates.len(),
            Some(per) => per.iter().map(Vec::len).sum(),
        }
    }

    /// Positions of the samples `shard` owns: every count-th file, or for webdataset input
    /// every count-th tar shard.
    pub fn positions(&self, shard: Shard) -> Vec<usize> {
        match &self.shard_of {
            None => shard.positions(self.samples.len()),
            Some(of) => (0..of.len())
                .filter(|&i| of[i] % shard.count == shard.index)
                .collect(),
        }
    }
}

/// What finished for one dataset: its result (merged or this process's), and where files went.
pub struct DatasetResult {
    pub info: RunInfo,
    pub tally: Tally,
    pub elapsed: f64,
    /// Whether `info`/`tally` are the whole dataset (unsharded, or merged by this rank).
    pub complete: bool,
    pub written: Vec<PathBuf>,
}

impl EvalOptions {
    /// Checks the flags that conflict, before anything is listed or loaded.
    pub fn validate(&self) -> Result<(), Error> {
        let usage = |m: &str| Err(Error::Usage(m.to_string()));
        if self.batch_size == 0 {
            return usage("--batch-size-test must be at least 1");
        }
        if self.workers == 0 {
            return usage("--workers must be at least 1");
        }
        if self.datasets.is_empty() {
            return usage("--test-dataset is empty");
        }
        let one_list = self
            .classnames
            .as_deref()
            .is_some_and(|p| !data::labels::is_json(p));
        if self.datasets.len() > 1 && one_list {
            return usage(
                "--classnames with one name per line applies to one dataset; it conflicts with several --test-dataset names (a CLIP_benchmark class-name JSON covers several)",
            );
        }
        if self.shard.count > 1 && self.output_dir.is_none() {
            return Err(Error::Usage(format!(
                "this is shard {} of {}: give --output-dir for the partial results",
                self.shard.index, self.shard.count
            )));
        }
        if self.merge && self.output_dir.is_none() {
            return usage("--merge needs --output-dir (where the partials are)");
        }
        for (flag, path) in [
            ("--output", &self.output),
            ("--save-predictions", &self.save_predictions),
        ] {
            let Some(path) = path else { continue };
            // Filled once per dataset with a stand-in model: bad placeholders and datasets
            // that would share one file fail here, before anything runs.
            let mut seen: Vec<(PathBuf, &str)> = Vec::new();
            for name in &self.datasets {
                let p = self
                    .output_path(path, name, "{model}", Path::new("{pretrained}"))
                    .map_err(|e| Error::Usage(format!("{flag} {e}")))?;
                if let Some((_, other)) = seen.iter().find(|(q, _)| *q == p) {
                    return Err(Error::Usage(format!(
                        "{flag} {}: datasets {other} and {name} would both write {}; add {{dataset}}",
                        path.display(),
                        p.display()
                    )));
                }
                seen.push((p, name));
            }
        }
        if let Some(sp) = &self.split {
            if sp.is_empty() || sp.contains(['/', '\\']) || sp == ".." {
                return Err(Error::Usage(format!(
                    "--split {sp:?}: expected a split name such as test or train"
                )));
            }
        }
        Ok(())
    }

    fn several(&self) -> bool {
        self.datasets.len() > 1
    }

    /// One dataset's output file: a template filled (CLIP_benchmark's placeholders), else the
    /// path suffixed with the dataset's name when there are several.
    pub fn output_path(
        &self,
        path: &Path,
        dataset: &str,
        model: &str,
        checkpoint: &Path,
    ) -> Result<PathBuf, String> {
        if results::is_template(path) {
            return results::fill_template(
                path,
                &results::OutputVars {
                    dataset,
                    model,
                    checkpoint,
                    task: results::CLASSIFICATION,
                    language: self.language_name(),
                },
            );
        }
        Ok(if self.several() {
            results::suffixed_path(path, dataset)
        } else {
            path.to_path_buf()
        })
    }

    /// The prompts' language as CLIP_benchmark names it.
    pub fn language_name(&self) -> &'static str {
        self.language.name()
    }

    fn per_dataset(
        &self,
        path: Option<&Path>,
        name: &str,
        model: &LoadedModel,
    ) -> Result<Option<PathBuf>, Error> {
        path.map(|p| self.output_path(p, name, &model.name, &model.pretrained))
            .transpose()
            .map_err(Error::Usage)
    }
}

/// Lists and labels every dataset (before the model is loaded, so bad paths fail at once).
pub fn plan(opts: &EvalOptions) -> Result<Vec<DatasetPlan>, Error> {
    opts.datasets
        .iter()
        .filter(|n| !opts.skip.contains(n))
        .map(|n| plan_dataset(opts, n))
        .collect()
}

fn plan_dataset(opts: &EvalOptions, name: &str) -> Result<DatasetPlan, Error> {
    let base = if let Some(p) = per_dataset_root(&opts.data_path, name) {
        p
    } else if opts.several() {
        // DIR/<name>, or DIR itself when it is the root torchvision downloaded this one into
        // (CLIP_benchmark's shared --dataset_root).
        let own = opts.data_path.join(name);
        if !own.exists() && holds_download(&opts.data_path, name) {
            opts.data_path.clone()
        } else {
            own
        }
    } else {
        opts.data_path.clone()
    };
    let split = opts
        .split
        .as_deref()
        .unwrap_or(data::captions::DEFAULT_SPLIT);
    if data::vtab::from_tfds(name) {
        // One TFDS data_dir serves every VTAB task (CLIP_benchmark's --dataset_root).
        let root =
            per_dataset_root(&opts.data_path, name).unwrap_or_else(|| opts.data_path.clone());
        return plan_vtab(opts, name, &root, split);
    }
    // A root holding several downloads: the one --test-dataset names, else the first found.
    let want = data::labels::canonical(name);

    let cifar = data::cifar::find(&base, Some(want));
    let listed = data::listed::find(&base, Some(want));
    let listed_wanted = listed.as_ref().is_some_and(|(k, _)| k.dataset() == want);
    let cifar = cifar.filter(|(k, _)| k.dataset() == want || !listed_wanted);
    if let Some((kind, dir)) = cifar {
        let d = Download {
            dataset: kind.dataset(),
            what: kind.dataset(),
            dir: &dir,
            splits: &["test", "train"],
        };
        return plan_download(opts, name, d, split, || {
            let s = data::cifar::samples(kind, &dir, split)?;
            // The largest label fixes how many names are needed.
            let classes = s.iter().map(|s| s.label + 1).max().unwrap_or(0);
            Ok((s, Classes::AtLeast(classes), None))
        });
    }
    if let Some((kind, dir)) = listed {
        let d = Download {
            dataset: kind.dataset(),
            what: kind.name(),
            dir: &dir,
            splits: kind.splits(),
        };
        let mut targets = None;
        let mut plan = plan_download(opts, name, d, split, || {
            let listing = if kind == data::listed::Kind::Caltech101
                && data::labels::caltech_with_background(name)
            {
                data::listed::caltech101_with_background(&dir)
            } else if kind == data::listed::Kind::Voc2007 && data::labels::multilabel(name) {
                data::listed::voc2007_images(&dir, split).map(|m| {
                    targets = Some(m.positives);
                    (m.samples, m.classes)
                })
            } else {
                data::listed::samples(kind, &dir, split)
            };
            listing.map(|(s, c)| (s, Classes::Exactly(c.len()), Some(c)))
        })?;
        plan.targets = targets;
        return Ok(plan);
    }
    let fer_split = want == "fer2013" && base.join(split).is_dir();
    if opts.split.is_some() && !data::wds::has_split(&base, split) && !fer_split {
        return Err(Error::Usage(format!(
            "--split {split}: {} is not a webdataset directory with that split ({split}/nshards.txt)",
            base.display()
        )));
    }
    match data::wds::resolve(&base, split).transpose()? {
        Some((shards, true)) => {
            let mut plan = plan_wds(opts, name, shards, Some(&base))?;
            plan.split = Some(split.to_string());
            return Ok(plan);
        }
        Some((list, false)) => return plan_wds(opts, name, list, None),
        None => {}
    }
    // ImageFolder downloads: EuroSAT's eurosat/2750, FER2013's train/ and test/ (Kaggle's, as
    // CLIP_benchmark reads them).
    let eurosat = (want == "sat")
        .then(|| data::listed::eurosat(&base))
        .flatten();
    let root = match eurosat {
        Some(d) => d,
        None if fer_split => base.join(split),
        None => data::resolve_root(&base),
    };
    let folder = data::list(&root)?;
    let builtin = data::labels::label_set(name, opts.names_from, opts.language)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let (classnames, scheme) = match (&opts.classnames, builtin) {
        (Some(p), _) => (
            data::labels::read_classnames_for(p, name)?,
            data::labels::FolderScheme::Sorted,
        ),
        (None, Some(set)) => (set.classnames, set.scheme),
        (None, None) => return Err(unknown_dataset(name)),
    };
    let (templates, class_prompts) =
        resolve_prompts(templates_for(opts, name)?, &classnames, opts)?;
    let labels = data::labels::folder_labels(
        &folder.folders,
        &scheme,
        name,
        &classnames,
        opts.classnames.as_deref(),
    )?;
    let decoder = match data::labels::folder_converts_first(name) {
        true => data::Decoder::PilRgb,
        false => data::Decoder::Pil,
    };
    let samples = folder
        .samples
        .into_iter()
        .map(|s| Sample {
            label: labels[s.label],
            decoder,
            ..s
        })
        .collect();
    Ok(DatasetPlan {
        name: name.to_string(),
        empty_folders: folder.empty_folders.iter().map(|f| root.join(f)).collect(),
        gifs_left_out: folder.gifs_left_out,
        root,
        samples,
        classnames,
        templates,
        shard_of: None,
        index_skipped: Vec::new(),
        split: fer_split.then(|| split.to_string()),
        targets: None,
        class_prompts,
        notices: Vec::new(),
    })
}

/// A VTAB task (task_adaptation's split, labels and images) or a `tfds/` dataset read from a
/// TFDS data_dir; CLIP_benchmark's class names unless `--classnames`.
fn plan_vtab(
    opts: &EvalOptions,
    name: &str,
    root: &Path,
    split: &str,
) -> Result<DatasetPlan, Error> {
    let l = data::vtab::list_named(root, name, split).map_err(|e| match e {
        data::Error::Labels(msg) => Error::Usage(msg),
        other => other.into(),
    })?;
    let classnames = match &opts.classnames {
        Some(p) => {
            let c = data::labels::read_classnames_for(p, name)?;
            if c.len() != l.classes.len() {
                return Err(Error::Usage(format!(
                    "--classnames {}: {} class names for the {} classes of {name}",
                    p.display(),
                    c.len(),
                    l.classes.len()
                )));
            }
            c
        }
        None => l.classes,
    };
    let mut plan = split_plan(opts, name, l.dir, l.samples, classnames, split)?;
    plan.notices.extend(l.notice);
    Ok(plan)
}

/// The plan of one split of a dataset whose samples and class names are known (a download's or
/// a TFDS folder's): the prompts for those names, nothing left out.
fn split_plan(
    opts: &EvalOptions,
    name: &str,
    root: PathBuf,
    samples: Vec<Sample>,
    classnames: Vec<String>,
    split: &str,
) -> Result<DatasetPlan, Error> {
    let (templates, class_prompts) =
        resolve_prompts(templates_for(opts, name)?, &classnames, opts)?;
    Ok(DatasetPlan {
        name: name.to_string(),
        root,
        samples,
        classnames,
        templates,
        empty_folders: Vec::new(),
        gifs_left_out: 0,
        shard_of: None,
        index_skipped: Vec::new(),
        split: Some(split.to_string()),
        targets: None,
        class_prompts,
        notices: Vec::new(),
    })
}

/// CLIP_benchmark's `--dataset_root` placeholders: `{dataset}` (the name as given) and
/// `{dataset_cleaned}` (its `/` written `-`), when the path holds one.
fn per_dataset_root(path: &Path, name: &str) -> Option<PathBuf> {
    let s = path.to_str()?;
    if !s.contains("{dataset}") && !s.contains("{dataset_cleaned}") {
        return None;
    }
    let cleaned = name.replace('/', "-");
    Some(PathBuf::from(
        s.replace("{dataset_cleaned}", &cleaned)
            .replace("{dataset}", name),
    ))
}

/// Whether `dir` holds torchvision's download of `name`.
fn holds_download(dir: &Path, name: &str) -> bool {
    let want = data::labels::canonical(name);
    data::cifar::find_all(dir)
        .iter()
        .any(|(k, _)| k.dataset() == want)
        || data::listed::find_all(dir)
            .iter()
            .any(|(k, _)| k.dataset() == want)
        || (want == "sat" && data::listed::eurosat(dir).is_some())
}

/// The templates of `--templates` for a dataset without files of its own.
fn templates_for(opts: &EvalOptions, name: &str) -> Result<JsonPrompts, Error> {
    Ok(JsonPrompts::Templates(match &opts.templates {
        Templates::Imagenet => data::labels::imagenet_templates_in(opts.language),
        Templates::Dataset => data::vtab::templates(name)
            .or_else(|| data::labels::templates(name))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--templates dataset: no templates of its own for `{name}`"
                ))
            })?,
        Templates::File(p) => data::labels::read_templates(p)?,
        Templates::Json(p) => return Ok(data::labels::read_json_prompts(p, name)?),
    }))
}

/// A plan's `templates` and `class_prompts`.
type Prompts = (Vec<String>, Option<Vec<Vec<String>>>);

/// Templates, or each class's own prompts in class order (every class must have some).
fn resolve_prompts(
    src: JsonPrompts,
    classnames: &[String],
    opts: &EvalOptions,
) -> Result<Prompts, Error> {
    match src {
        JsonPrompts::Templates(t) => Ok((t, None)),
        JsonPrompts::PerClass(mut per) => {
            let file = match &opts.templates {
                Templates::Json(p) => p.clone(),
                _ => PathBuf::new(),
            };
            let prompts = classnames
                .iter()
                .map(|c| {
                    per.remove(c).ok_or_else(|| data::Error::Path {
                        path: file.clone(),
                        msg: format!("class {c:?} has no prompts of its own (--templates)"),
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok((Vec::new(), Some(prompts)))
        }
    }
}

/// A torchvision download (CIFAR-10/100 or one of `data::listed`): its `test` split (or `--split`),
/// labelled as the download labels it, named by the built-in list of `dataset` (which
/// `--test-dataset` must name, unless `--classnames` gives the names).
struct Download<'a> {
    dataset: &'a str,
    what: &'a str,
    dir: &'a Path,
    /// Its splits.
    splits: &'a [&'a str],
}

/// How many class names a download's labels need: its own class list's length, or (CIFAR,
/// whose batches hold labels only) at least one past the largest label.
enum Classes {
    Exactly(usize),
    AtLeast(usize),
}

fn plan_download(
    opts: &EvalOptions,
    name: &str,
    d: Download,
    split: &str,
    list: impl FnOnce() -> Result<(Vec<Sample>, Classes, Option<Vec<String>>), data::Error>,
) -> Result<DatasetPlan, Error> {
    if !d.splits.contains(&split) {
        return Err(Error::Usage(format!(
            "--split {split}: a {} download has the splits {}",
            d.what,
            d.splits.join(", ")
        )));
    }
    if opts.classnames.is_none() && data::labels::canonical(name) != d.dataset {
        return Err(Error::Usage(format!(
            "--test-data-path {} holds {}: pass --test-dataset {} (or --classnames FILE)",
            d.dir.display(),
            d.what,
            d.dataset
        )));
    }
    let (samples, classes, own) = list()?;
    let builtin = data::labels::label_set(name, opts.names_from, opts.language)
        .map_err(|e| Error::Usage(e.to_string()))?;
    // --classnames, else the built-in list, else the download's own names (ObjectNet's).
    let classnames = match (&opts.classnames, builtin, own) {
        (Some(p), _, _) => data::labels::read_classnames_for(p, name)?,
        (None, Some(set), _) => set.classnames,
        (None, None, Some(own)) => own,
        (None, None, None) => return Err(unknown_dataset(name)),
    };
    let fits = match classes {
        Classes::Exactly(n) => classnames.len() == n,
        Classes::AtLeast(n) => classnames.len() >= n,
    };
    if !fits {
        return Err(Error::Usage(format!(
            "{} class names for the {} classes of {}",
            classnames.len(),
            match classes {
                Classes::Exactly(n) | Classes::AtLeast(n) => n,
            },
            d.dir.display()
        )));
    }
    split_plan(opts, name, d.dir.to_path_buf(), samples, classnames, split)
}

/// The 19 VTAB tasks in CLIP_benchmark's order (its `vtab+` lists them so).
const VTAB_TASKS: [&str; 19] = [
    "vtab/caltech101",
    "vtab/cifar10",
    "vtab/cifar100",
    "vtab/clevr_count_all",
    "vtab/clevr_closest_object_distance",
    "vtab/diabetic_retinopathy",
    "vtab/dmlab",
    "vtab/dsprites_label_orientation",
    "vtab/dsprites_label_x_position",
    "vtab/dtd",
    "vtab/eurosat",
    "vtab/kitti_closest_vehicle_distance",
    "vtab/flowers",
    "vtab/pets",
    "vtab/pcam",
    "vtab/resisc45",
    "vtab/smallnorb_label_azimuth",
    "vtab/smallnorb_label_elevation",
    "vtab/svhn",
];

/// The other classification sets of CLIP_benchmark's `vtab+`, before its VTAB tasks.
const VTAB_PLUS_OTHERS: [&str; 17] = [
    "imagenet1k",
    "imagenetv2",
    "imagenet_sketch",
    "imagenet-a",
    "imagenet-r",
    "objectnet",
    "fer2013",
    "voc2007",
    "voc2007_multilabel",
    "sun397",
    "cars",
    "fgvc_aircraft",
    "mnist",
    "stl10",
    "gtsrb",
    "country211",
    "renderedsst2",
];

/// The names that end in `+` among the collections (kept whole in an `a+b` spec).
const PLUS_COLLECTIONS: [&str; 1] = ["vtab+"];

/// CLIP_benchmark's classification collections (its `dataset_collection`, in its order), all
/// read here: `imagenet_robustness`; `vtab`, which holds the torchvision `sun397` (before
/// `vtab/svhn`) and not `vtab/cifar10`; `vtab+`, the other sets then the 19 tasks.
fn collection(name: &str) -> Option<Vec<&'static str>> {
    Some(match name {
        "imagenet_robustness" => vec![
            "imagenetv2",
            "imagenet_sketch",
            "imagenet-a",
            "imagenet-r",
            "objectnet",
        ],
        "vtab" => {
            let mut v: Vec<&str> = VTAB_TASKS
                .iter()
                .copied()
                .filter(|t| *t != "vtab/cifar10")
                .collect();
            v.insert(v.len() - 1, "sun397");
            v
        }
        "vtab+" => VTAB_PLUS_OTHERS
            .iter()
            .chain(&VTAB_TASKS)
            .copied()
            .collect(),
        _ => return None,
    })
}

/// The datasets `--test-dataset` names, as CLIP_benchmark's `--dataset` takes them: `a+b`, each
/// a dataset name, a collection (`imagenet_robustness`, `vtab`, `vtab+`) or a text file of names, one per line
/// (an existing file whose name has a `.` or a `/`, so a bare dataset name is never read as
/// one).
pub fn dataset_names(spec: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for part in spec_parts(spec)
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let path = Path::new(part);
        if let Some(list) = collection(part) {
            out.extend(list.iter().map(|s| s.to_string()));
        } else if part.contains(['.', '/']) && path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Usage(format!("--test-dataset {part}: {e}")))?;
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.is_empty() {
                return Err(Error::Usage(format!(
                    "--test-dataset {part}: the file names no dataset"
                )));
            }
            out.extend(names);
        } else {
            out.push(part.to_string());
        }
    }
    Ok(out)
}

/// `spec` cut at its `+`s, but a collection whose name ends in `+` (`vtab+`) kept whole when
/// the spec or the next `+` follows it.
fn spec_parts(spec: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = spec;
    while !rest.is_empty() {
        let whole = PLUS_COLLECTIONS.iter().copied().find(|n| {
            rest.starts_with(n) && matches!(rest.as_bytes().get(n.len()), None | Some(b'+'))
        });
        let (head, tail) = match whole {
            Some(n) => (n, rest[n.len()..].strip_prefix('+').unwrap_or("")),
            None => rest.split_once('+').unwrap_or((rest, "")),
        };
        out.push(head);
        rest = tail;
    }
    out
}

fn unknown_dataset(name: &str) -> Error {
    let known = data::labels::known_datasets();
    let hint = crate::util::nearest(name, &data::labels::accepted_names())
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    Error::Usage(format!(
        "--test-dataset {name}: unknown dataset{hint}; known: {} (or CLIP_benchmark's names: imagenet1k, cars, pets, ..., and vtab/TASK or tfds/NAME from a TFDS data_dir); or give --classnames FILE",
        known.join(", ")
    ))
}

/// A webdataset input: CLIP_benchmark's layout under `dir` (whose `classnames.txt` and
/// `zeroshot_classification_templates.txt` are the dataset's own), or an explicit shard list.
/// Labels are the samples' `cls` values, or with `dataset_type.txt` `multilabel` the classes
/// their `npy` arrays mark.
fn plan_wds(
    opts: &EvalOptions,
    name: &str,
    shards: Vec<PathBuf>,
    dir: Option<&Path>,
) -> Result<DatasetPlan, Error> {
    let own_names = dir
        .map(|d| d.join("classnames.txt"))
        .filter(|p| p.is_file());
    let classnames = match (&opts.classnames, &own_names) {
        (Some(p), _) => data::labels::read_classnames_for(p, name)?,
        (None, Some(p)) => data::labels::read_classnames(p)?,
        (None, None) => {
            data::labels::label_set(name, opts.names_from, opts.language)
                .map_err(|e| Error::Usage(e.to_string()))?
                .ok_or_else(|| unknown_dataset(name))?
                .classnames
        }
    };
    let own_templates = dir
        .map(|d| d.join("zeroshot_classification_templates.txt"))
        .filter(|p| p.is_file());
    let src = match (&opts.templates, own_templates) {
        (Templates::Dataset, Some(p)) => JsonPrompts::Templates(data::labels::read_templates(&p)?),
        _ => templates_for(opts, name)?,
    };
    let (templates, class_prompts) = resolve_prompts(src, &classnames, opts)?;
    // CLIP_benchmark's `dataset_type.txt`: `multilabel` sets hold multi-hot `npy` labels.
    let multilabel = match dir.map(|d| d.join("dataset_type.txt")) {
        Some(p) if p.is_file() => {
            let t = std::fs::read_to_string(&p).map_err(|e| data::Error::Path {
                path: p.clone(),
                msg: e.to_string(),
            })?;
            t.trim().eq_ignore_ascii_case("multilabel")
        }
        _ => false,
    };
    let wants = data::wds::Wants {
        classes: Some(classnames.len()),
        txt: data::wds::Txt::Unused,
        multilabel,
    };
    let ix = data::wds::index(&shards, wants, opts.skip_unreadable)?;
    let root = dir
        .map(Path::to_path_buf)
        .or_else(|| shards[0].parent().map(Path::to_path_buf))
        .unwrap_or_default();
    Ok(DatasetPlan {
        name: name.to_string(),
        root,
        samples: ix.samples,
        classnames,
        templates,
        empty_folders: Vec::new(),
        gifs_left_out: 0,
        shard_of: Some(ix.shard_of),
        index_skipped: ix.skipped,
        split: None,
        targets: multilabel.then_some(ix.positives),
        class_prompts,
        notices: Vec::new(),
    })
}

/// What computes the features, for cache keys and fingerprints: engine and precision.
fn compute_tag(m: &LoadedModel) -> String {
    format!("{} {}", m.plan.engine.name(), m.plan.precision.name())
}

/// Evaluates every planned dataset with `model` (whose checkpoint hashes to `sha`); `done` is
/// called as each dataset finishes (its files already written). `exact`: the model's fp32
/// twin, with which a reduced-precision run decides its near-ties ([`crate::recheck`]).
pub fn evaluate(
    opts: &EvalOptions,
    plans: &[DatasetPlan],
    model: &LoadedModel,
    exact: Option<&LoadedModel>,
    sha: &str,
    log: Log,
    mut done: impl FnMut(&DatasetResult),
) -> Result<(), Error> {
    if opts.check_memory {
        check_batch_memory(model, opts.batch_size)?;
    }
    let shard = opts.shard;
    for plan in plans.iter().filter(|p| !opts.skip.contains(&p.name)) {
        // With a recheck the class vectors are the fp32 twin's (and cached as fp32).
        let clf = if opts.load_clfs.is_empty() {
            classifier(opts, plan, exact.unwrap_or(model), sha, log)?
        } else {
            loaded_classifier(&opts.load_clfs, plan, model, log)?
        };
        if let Some(p) = &opts.save_clf {
            let path = opts
                .output_path(p, &plan.name, &model.name, &model.pretrained)
                .map_err(Error::Usage)?;
            save_classifier(&path, &clf)?;
            log.info(format!("class vectors: saved to {}", path.display()));
        }
        if shard.count > 1 {
            log.info(format!(
                "{}: shard {} of {}",
                plan.name, shard.index, shard.count
            ));
        }
        log.info(format!(
            "{}: {} images in {} classes from {}",
            plan.name,
            plan.samples.len(),
            plan.classnames.len(),
            plan.root.display()
        ));
        let ImagesRun {
            tally,
            elapsed,
            spool,
            margin,
        } = run_images(opts, plan, model, exact, sha, &clf, log)?;
        if let Some(m) = margin {
            log.info(format!(
                "{}: {} of {} images within {m:.2e} of a decision scored again in fp32",
                plan.name,
                tally.rechecked,
                tally.images()
            ));
        }
        let info = RunInfo {
            dataset: plan.name.clone(),
            model: model.name.clone(),
            checkpoint: crate::util::path_text(&model.checkpoint.path),
            pretrained: (model.pretrained != model.checkpoint.path)
                .then(|| crate::util::path_text(&model.pretrained)),
            normalize: (model.normalize != Default::default())
                .then_some([model.normalize.mean, model.normalize.std]),
            resize_mode: (model.resize.mode != Default::default())
                .then(|| model.resize.mode.name().to_string()),
            interpolation: (model.resize.interpolation != Default::default())
                .then(|| model.resize.interpolation.name().to_string()),
            tokenizer: match &model.tokenizer {
                crate::tokenizer::TextTokenizer::Hf(_) => Some(model.tokenizer.describe()),
                crate::tokenizer::TextTokenizer::Clip => None,
            },
            load_clfs: (!opts.load_clfs.is_empty()).then(|| {
                opts.load_clfs
                    .iter()
                    .map(|p| crate::util::path_text(p))
                    .collect()
            }),
            dump_classnames: opts.dump_classnames,
            templates: opts.dump_templates.then(|| match &plan.class_prompts {
                None => plan.templates.clone().into(),
                Some(per) => plan
                    .classnames
                    .iter()
                    .zip(per)
                    .map(|(c, p)| (c.clone(), p.clone().into()))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            }),
            checkpoint_sha256: sha.to_string(),
            precision: model.plan.precision.name().to_string(),
            device: crate::device::describe(&model.device),
            engine: model.plan.engine.name().to_string(),
            dtype: crate::engine::dtype_name(model.plan.dtype).to_string(),
            batch_size: opts.batch_size,
            classnames: plan.classnames.clone(),
            num_samples: plan.samples.len(),
            family: model.config.family.name().to_string(),
            activation: model.config.activation.name().to_string(),
            requested_precision: (model.plan.requested != model.plan.precision)
                .then(|| model.plan.requested.name().to_string()),
            bf16_kernel: model.plan.bf16_kernel.map(str::to_string),
            fused_ops: (model.plan.engine == crate::engine::Engine::Candle)
                .then(|| crate::models::fused::path(&model.device).name().to_string()),
            recheck_margin: margin,
            split: plan.split.clone(),
            language: opts.language_name().to_string(),
        };
        log.info(format!(
            "{}: {} images in {elapsed:.1}s ({:.1} images/s)",
            plan.name,
            tally.images(),
            tally.images() as f64 / elapsed.max(1e-9)
        ));
        if let Some(dir) = &opts.output_dir {
            write_partial(dir, shard, &info, &tally, elapsed, log)?;
        }
        // The whole dataset's result: this process's when unsharded, the merge on rank 0 with
        // --merge; other shards only have their partial.
        let (info, tally, elapsed, complete) = if shard.count == 1 {
            (info, tally, elapsed, true)
        } else if opts.merge && shard.index == 0 {
            let (info, tally, elapsed) = wait_and_merge(opts, &plan.name, log)?;
            (info, tally, elapsed, true)
        } else {
            (info, tally, elapsed, false)
        };
        let mut written = Vec::new();
        if complete {
            let output = opts.per_dataset(opts.output.as_deref(), &plan.name, model)?;
            let preds = opts.per_dataset(opts.save_predictions.as_deref(), &plan.name, model)?;
            match (&spool, shard.count) {
                (Some(sp), 1) => {
                    results::write_outputs_spooled(
                        &info,
                        &tally,
                        elapsed,
                        output.as_deref(),
                        preds.as_deref(),
                        sp,
                    )?;
                    let _ = std::fs::remove_file(sp);
                }
                _ => results::write_outputs(
                    &info,
                    &tally,
                    elapsed,
                    output.as_deref(),
                    preds.as_deref(),
                )?,
            }
            written.extend(output.into_iter().chain(preds));
        }
        done(&DatasetResult {
            info,
            tally,
            elapsed,
            complete,
            written,
        });
    }
    Ok(())
}

/// This shard's partial result in `dir`, for `merge` or rank 0.
fn write_partial(
    dir: &Path,
    shard: Shard,
    info: &RunInfo,
    tally: &Tally,
    elapsed: f64,
    log: Log,
) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: format!("cannot create --output-dir {}", dir.display()),
        source,
    })?;
    let partial = Partial {
        kind: PARTIAL_KIND.into(),
        version: VERSION.into(),
        shard_index: shard.index,
        num_shards: shard.count,
        info: info.clone(),
        tally: tally.clone(),
        elapsed_s: elapsed,
    };
    let p = results::partial_path(dir, &info.dataset, shard.index, shard.count);
    let body = serde_json::to_vec(&partial).map_err(|e| Error::Runtime(e.to_string()))?;
    crate::util::write_atomic(&p, &body).map_err(|source| Error::Io {
        what: format!("cannot write partial result {}", p.display()),
        source,
    })?;
    log.info(format!("wrote partial result {}", p.display()));
    Ok(())
}

fn wait_and_merge(
    opts: &EvalOptions,
    name: &str,
    log: Log,
) -> Result<(RunInfo, Tally, f64), Error> {
    let shard = opts.shard;
    let dir = opts
        .output_dir
        .as_ref()
        .ok_or_else(|| Error::Usage("--merge needs --output-dir".into()))?;
    let paths: Vec<PathBuf> = (0..shard.count)
        .map(|i| results::partial_path(dir, name, i, shard.count))
        .collect();
    let deadline = std::time::Instant::now() + opts.merge_timeout;
    log.info(format!(
        "waiting for {} partial results in {}",
        shard.count,
        dir.display()
    ));
    while !paths.iter().all(|p| p.exists()) {
        if std::time::Instant::now() > deadline || interrupted().load(Ordering::SeqCst) {
            let missing: Vec<String> = paths
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.exists())
                .map(|(i, _)| i.to_string())
                .collect();
            return Err(Error::Runtime(format!(
                "--merge: shard(s) {} did not finish in time",
                missing.join(", ")
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    Ok(results::merge_partials(&paths)?)
}

/// The class vectors of one dataset: from the cache, or encoded (and cached).
/// CLIP_benchmark's `--load_clfs`: classifiers `[embed_dim, classes]` (its `torch.save`
/// files, or ours in safetensors) averaged as it averages them (each divided by their count,
/// then summed in order); `[classes, embed_dim]` f32 on the model's device.
fn loaded_classifier(
    files: &[PathBuf],
    plan: &DatasetPlan,
    m: &LoadedModel,
    log: Log,
) -> Result<candle_core::Tensor, Error> {
    let (embed, classes) = (m.config.embed_dim, plan.classnames.len());
    let n = files.len() as f32;
    let mut sum: Option<Vec<f32>> = None;
    for f in files {
        let bad = |msg: String| Error::Classifier(format!("--load-clfs {}: {msg}", f.display()));
        let c = crate::checkpoint::Checkpoint::open(f).map_err(|e| bad(e.to_string()))?;
        let keys: Vec<&String> = c.keys().collect();
        let [key] = keys[..] else {
            return Err(bad(format!(
                "holds {} tensors; a classifier file holds one",
                keys.len()
            )));
        };
        let shape = c.shape(key).unwrap_or_default().to_vec();
        if shape != [embed, classes] {
            return Err(bad(format!(
                "shape {shape:?}, but {} needs [{embed}, {classes}] (embedding width x classes of `{}`)",
                m.name, plan.name
            )));
        }
        let v = c.read_f32(key).map_err(|e| bad(e.to_string()))?;
        sum = Some(match sum {
            None => v.iter().map(|x| x / n).collect(),
            Some(s) => s.iter().zip(&v).map(|(a, x)| a + x / n).collect(),
        });
    }
    log.info(format!(
        "class vectors: {} classifier file(s) loaded and averaged (text encoding skipped)",
        files.len()
    ));
    let t = candle_core::Tensor::from_vec(sum.unwrap_or_default(), (embed, classes), &m.device)?;
    Ok(t.t()?.contiguous()?)
}

/// CLIP_benchmark's `--save_clf`: the classifier `[embed_dim, classes]` as it saves it
/// (`torch.save`, for `.pt`/`.pth`), or safetensors (key `classifier`) for other names.
fn save_classifier(path: &Path, clf: &candle_core::Tensor) -> Result<(), Error> {
    let t = clf
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .t()?
        .contiguous()?;
    let io = |source| Error::Io {
        what: format!("cannot write --save-clf {}", path.display()),
        source,
    };
    let torch = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pt") || e.eq_ignore_ascii_case("pth"));
    if torch {
        let data = t.flatten_all()?.to_vec1::<f32>()?;
        crate::util::write_torch_tensor(path, &data, t.dims()).map_err(io)
    } else {
        crate::util::write_safetensors(path, &[("classifier".to_string(), t)], None).map_err(io)
    }
}

fn classifier(
    opts: &EvalOptions,
    plan: &DatasetPlan,
    m: &LoadedModel,
    sha: &str,
    log: Log,
) -> Result<candle_core::Tensor, Error> {
    let cfg_json = serde_json::to_string(&m.config).map_err(|e| Error::Runtime(e.to_string()))?;
    // A HuggingFace tokenizer's files are not in the checkpoint: their digest keys the vectors.
    let cfg_json = cfg_json + m.tokenizer.fingerprint();
    let key = zeroshot::cache_key(
        sha,
        &m.name,
        &cfg_json,
        &plan.classnames,
        &plan.prompt_key(),
        &compute_tag(m),
    );
    let mut cache = opts.text_cache.clone().map(|dir| TextCache { dir });
    if let Some(c) = &cache {
        // Another rank may be computing the same vectors: wait for its file rather than redo it.
        let mut waited = false;
        loop {
            if let Some(t) = c.load(&key, &m.device) {
                log.info(format!(
                    "class vectors: loaded from cache {} (text encoding skipped)",
                    c.path(&key).display()
                ));
                return Ok(t);
            }
            match c.try_lock(&key) {
                CacheLock::Held => break,
                CacheLock::Busy => {}
                CacheLock::Unavailable(why) => {
                    log.warn(format!(
                        "class-vector cache {} cannot be written ({why}): computing without it",
                        c.dir.display()
                    ));
                    cache = None;
                    break;
                }
            }
            if !waited {
                log.info(
                    "class vectors: another process is computing them; waiting for its cache file",
                );
                waited = true;
            }
            if interrupted().load(Ordering::SeqCst) {
                return Err(Error::Interrupted(
                    "interrupted while waiting for the class-vector cache".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    let n = plan.prompt_count();
    log.info(match plan.class_prompts {
        None => format!(
            "class vectors: encoding {} prompts ({} classes x {} templates) in {}",
            n,
            plan.classnames.len(),
            plan.templates.len(),
            m.plan.precision.name()
        ),
        Some(_) => format!(
            "class vectors: encoding {} prompts (each of the {} classes its own) in {}",
            n,
            plan.classnames.len(),
            m.plan.precision.name()
        ),
    });
    let t = std::time::Instant::now();
    let mut bar = Progress::new(log.quiet, n as u64, "text", "prompts");
    let stop = interrupted();
    let result = match &plan.class_prompts {
        None => zeroshot::class_vectors(
            m,
            &plan.classnames,
            &plan.templates,
            opts.text_batch_size,
            |d, _| bar.set(d as u64),
        ),
        Some(per) => zeroshot::class_vectors_per_class(m, per, opts.text_batch_size, |d, _| {
            bar.set(d as u64)
        }),
    };
    bar.finish();
    let release = || {
        if let Some(c) = &cache {
            c.unlock(&key);
        }
    };
    let clf = match result {
        Ok(c) => c,
        Err(e) => {
            release();
            return Err(e.into());
        }
    };
    if stop.load(Ordering::SeqCst) {
        release();
        return Err(Error::Interrupted(
            "interrupted during text encoding; nothing was cached".into(),
        ));
    }
    let secs = t.elapsed().as_secs_f64();
    log.info(format!(
        "class vectors: {n} prompts in {secs:.1}s ({:.1} prompts/s)",
        n as f64 / secs.max(1e-9)
    ));
    if let Some(c) = &cache {
        let meta = [
            ("model", m.name.clone()),
            ("checkpoint_sha256", sha.to_string()),
            ("engine", m.plan.engine.name().to_string()),
            ("precision", m.plan.precision.name().to_string()),
            ("dtype", crate::engine::dtype_name(m.plan.dtype).to_string()),
            ("device", crate::device::describe(&m.device)),
            ("classes", plan.classnames.len().to_string()),
            ("templates", plan.templates.len().to_string()),
            ("prompts", n.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        match c.store(&key, &clf, meta) {
            Ok(p) => log.info(format!("class vectors: cached in {}", p.display())),
            Err(e) => log.warn(format!("could not cache class vectors: {e}")),
        }
        release();
    }
    Ok(clf)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProgressFile {
    fingerprint: String,
    done: usize,
    tally: Tally,
    /// Bytes of prediction rows spooled up to `done` (the rest is redone on resume).
    #[serde(default)]
    spool_len: u64,
}

/// Identifies a run for `--resume`: model, compute (and whether near-ties are rechecked), data,
/// labels, shard and batch size.
fn fingerprint(
    opts: &EvalOptions,
    plan: &DatasetPlan,
    m: &LoadedModel,
    recheck: bool,
    sha: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let compute = format!(
        "{}{}",
        compute_tag(m),
        if recheck { " recheck" } else { "" }
    );
    for part in [sha, m.name.as_str(), &compute, plan.name.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(plan.root.as_os_str().as_encoded_bytes());
    for smp in &plan.samples {
        h.update(smp.name().as_bytes());
        h.update((smp.label as u64).to_le_bytes());
        // A run started by a build that decoded its images otherwise is not resumed.
        if let Some(tag) = smp.decoding_tag() {
            h.update(tag.as_bytes());
        }
    }
    for l in [&plan.classnames, &plan.prompt_key()] {
        for x in l {
            h.update(x.as_bytes());
            h.update([0]);
        }
    }
    h.update((opts.shard.index as u64).to_le_bytes());
    h.update((opts.shard.count as u64).to_le_bytes());
    h.update((opts.batch_size as u64).to_le_bytes());
    format!("{:x}", h.finalize())
}

/// What an image memo entry is keyed by: the weights and what computes with them, the
/// images and how they are read, batched and sharded (not the class names or prompts).
fn images_key(opts: &EvalOptions, plan: &DatasetPlan, m: &LoadedModel, sha: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let cfg = serde_json::to_string(&m.config).unwrap_or_default();
    let how = format!(
        "{} {:?} {:?} {:?}",
        compute_tag(m),
        m.resize,
        m.normalize,
        crate::device::describe(&m.device)
    );
    for part in [sha, m.name.as_str(), &cfg, &how, plan.name.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(plan.root.as_os_str().as_encoded_bytes());
    for smp in &plan.samples {
        h.update(smp.name().as_bytes());
        h.update([0]);
    }
    for x in [
        opts.shard.index,
        opts.shard.count,
        opts.batch_size,
        usize::from(opts.skip_unreadable),
    ] {
        h.update((x as u64).to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

/// A rough upper bound of the working memory one image needs in the image encoder (the
/// largest activations alive at once, with headroom), to refuse batches that cannot fit.
fn bytes_per_image(cfg: &crate::models::Config) -> u64 {
    let r = cfg.image_resolution as u64;
    match &cfg.vision_layers {
        crate::models::VisionLayers::Vit(_) => {
            let g = r / cfg.vision_patch_size.unwrap_or(1) as u64;
            let l = g * g + 1;
            let w = cfg.vision_width as u64;
            let heads = cfg.vision_heads() as u64;
            4 * (12 * l * 4 * w + 3 * heads * l * l)
        }
        crate::models::VisionLayers::ResNet(_) => {
            // Stem output at half resolution, width/2 channels, a few copies alive.
            let w = cfg.vision_width as u64;
            4 * 6 * (r / 2) * (r / 2) * w
        }
    }
}

fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Refuses a batch size whose activations cannot fit in the available memory, before any work.
fn check_batch_memory(m: &LoadedModel, batch: usize) -> Result<(), Error> {
    if !m.device.is_cpu() {
        return Ok(());
    }
    let need = bytes_per_image(&m.config).saturating_mul(batch as u64);
    match available_memory() {
        Some(avail) if need > avail => Err(Error::OutOfMemory(format!(
            "a batch of {} images needs about {:.1} GB but {:.1} GB of memory is available; use a smaller --batch-size-test",
            batch,
            need as f64 / 1e9,
            avail as f64 / 1e9
        ))),
        _ => Ok(()),
    }
}

/// Whether a failed computation ran out of (GPU) memory, by the error's kind: CUDA's
/// out-of-memory result or cuBLAS's failed allocation. (The CPU aborts on allocation failure,
/// which [`check_batch_memory`] prevents.)
pub fn is_out_of_memory(e: &candle_core::Error) -> bool {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => is_out_of_memory(inner),
        candle_core::Error::Context { inner, .. } => is_out_of_memory(inner),
        #[cfg(feature = "cuda")]
        candle_core::Error::Cuda(b) => {
            use candle_core::cuda_backend::cudarc::{cublas, driver};
            use candle_core::cuda_backend::CudaError;
            match b.downcast_ref::<CudaError>() {
                Some(CudaError::Cuda(driver::DriverError(r)))
                | Some(CudaError::Load {
                    cuda: driver::DriverError(r),
                    ..
                }) => *r == driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY,
                Some(CudaError::Cublas(cublas::result::CublasError(s))) => {
                    *s == cublas::sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// What streaming one dataset's images produced.
struct ImagesRun {
    tally: Tally,
    elapsed: f64,
    /// The predictions spooled to disk, if any.
    spool: Option<PathBuf>,
    /// The recheck's margin, when `exact` was given and an image was scored.
    margin: Option<f32>,
}

fn run_images(
    opts: &EvalOptions,
    plan: &DatasetPlan,
    m: &LoadedModel,
    exact: Option<&LoadedModel>,
    sha: &str,
    clf: &candle_core::Tensor,
    log: Log,
) -> Result<ImagesRun, Error> {
    use std::io::{Seek, Write};
    let res = m.config.image_resolution;
    let positions = plan.positions(opts.shard);
    let fp = fingerprint(opts, plan, m, exact.is_some(), sha);
    let progress_path = opts.progress_dir.join(format!("{fp}.json"));
    // Progress is for --resume only: a folder that cannot be written (a read-only home on a
    // cluster node) costs the resume, not the run.
    let progress_ok = std::cell::Cell::new(match crate::util::probe_dir(&opts.progress_dir) {
        Ok(()) => true,
        Err(e) => {
            log.warn(format!(
                "progress cannot be saved in {} ({e}): this run cannot be resumed",
                opts.progress_dir.display()
            ));
            false
        }
    });
    // Unsharded runs keep only counts in memory: prediction rows go to a spool file beside the
    // progress file (when a CSV is wanted), so memory stays flat however long the run.
    let spooling = progress_ok.get() && opts.shard.count == 1 && opts.output_dir.is_none();
    let spool_path = (spooling && opts.save_predictions.is_some())
        .then(|| opts.progress_dir.join(format!("{fp}.rows")));
    let mut spool_len = 0u64;
    let mut tally = Tally::new(plan.classnames.len());
    let mut start_at = 0;
    if opts.resume {
        match std::fs::read(&progress_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ProgressFile>(&b).ok())
        {
            Some(p) if p.fingerprint == fp => {
                log.info(format!(
                    "resuming after {} of {} images",
                    p.done,
                    positions.len()
                ));
                start_at = p.done;
                tally = p.tally;
                spool_len = p.spool_len;
            }
            _ => log.warn("--resume: no progress file for this run; starting from the beginning"),
        }
    }
    let spool_io = |source| Error::Io {
        what: format!(
            "cannot write the predictions spool in {}",
            opts.progress_dir.display()
        ),
        source,
    };
    let mut spool = match &spool_path {
        None => None,
        // Spooling implies the progress folder was made and probed above.
        Some(p) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(p)
                .map_err(spool_io)?;
            // Rows written after the last saved progress are redone.
            f.set_len(spool_len).map_err(spool_io)?;
            f.seek(std::io::SeekFrom::End(0)).map_err(spool_io)?;
            Some(std::io::BufWriter::new(f))
        }
    };
    let samples = Arc::new(plan.samples.clone());
    let stop = interrupted();
    // Features an earlier run over the same images computed (another --language), scored
    // again; a run that starts at the beginning without a recheck keeps its own for later ones.
    let memo_key = (start_at == 0 && exact.is_none())
        .then_some(opts.image_memo.as_ref())
        .flatten()
        .map(|memo| (memo, images_key(opts, plan, m, sha)));
    let remembered = memo_key
        .as_ref()
        .and_then(|(memo, key)| memo.runs.lock().ok()?.get(key).cloned());
    if remembered.is_some() {
        log.info(format!(
            "{}: image features reused from the run before (same images and model)",
            plan.name
        ));
    }
    let mut kept: Option<Vec<MemoBatch>> = memo_key
        .as_ref()
        .filter(|_| remembered.is_none())
        .map(|_| Vec::new());
    // Each batch with its pixels, which the recheck needs (and the memo, never used with it,
    // does not keep).
    type Source<'a> = Box<dyn Iterator<Item = Result<(MemoBatch, Option<Tensor>), Error>> + 'a>;
    let encode = |batch: data::Batch| -> Result<(MemoBatch, Option<Tensor>), Error> {
        let b = batch.indices.len();
        let (feats, pixels) = if b > 0 {
            let pixels =
                crate::preprocess::normalize_batch(batch.crops, b, res, &m.device, m.normalize)?;
            let feats = m.model.encode_image_normalized(&pixels).map_err(|e| {
                if is_out_of_memory(&e) {
                    Error::OutOfMemory(format!(
                        "a batch of {b} images does not fit in memory ({}); use a smaller --batch-size-test",
                        e.to_string().lines().next().unwrap_or_default()
                    ))
                } else {
                    e.into()
                }
            })?;
            (feats, Some(pixels))
        } else {
            (
                Tensor::zeros((0, 1), candle_core::DType::F32, &m.device)?,
                None,
            )
        };
        Ok((
            MemoBatch {
                indices: batch.indices,
                skipped: batch.skipped,
                feats,
            },
            pixels,
        ))
    };
    let source: Source = match &remembered {
        Some(run) => Box::new(run.iter().map(|b| {
            let copy = MemoBatch {
                indices: b.indices.clone(),
                skipped: b.skipped.clone(),
                feats: b.feats.clone(),
            };
            Ok((copy, None))
        })),
        None => {
            let rx = data::stream(
                samples.clone(),
                positions[start_at..].to_vec(),
                data::DecodeOptions {
                    resolution: res,
                    resize: m.resize,
                    batch_size: opts.batch_size,
                    workers: opts.workers,
                    skip_unreadable: opts.skip_unreadable,
                },
                stop.clone(),
            );
            Box::new(rx.into_iter().map(move |msg| {
                let batch = msg.map_err(|e| match e {
                    data::Error::Image(e) => Error::Image(e),
                    other => other.into(),
                })?;
                encode(batch)
            }))
        }
    };
    let clf_t = clf.t()?.contiguous()?;
    let mut recheck = exact.map(|x| Recheck::new(x, clf)).transpose()?;
    let mut bar = Progress::new(log.quiet, positions.len() as u64, "images", "img");
    let mut done = start_at;
    bar.set(done as u64);
    let t0 = std::time::Instant::now();
    // A failed save (a full disk) is warned about once and ends the saving, not the run.
    let save_progress = |done: usize, tally: &Tally, spool_len: u64| {
        if !progress_ok.get() {
            return;
        }
        let saved = serde_json::to_vec(&ProgressFile {
            fingerprint: fp.clone(),
            done,
            tally: tally.clone(),
            spool_len,
        })
        .map_err(std::io::Error::other)
        .and_then(|body| crate::util::write_atomic(&progress_path, &body));
        if let Err(e) = saved {
            log.warn(format!(
                "cannot save progress to {} ({e}): this run cannot be resumed",
                progress_path.display()
            ));
            progress_ok.set(false);
        }
    };
    let interrupted_after = |done: usize| {
        let next = if progress_ok.get() {
            "Rerun the same command with --resume to continue"
        } else {
            "The progress could not be saved: a rerun starts from the beginning"
        };
        Error::Interrupted(format!(
            "interrupted after {done} of {} images; no result was written. {next}",
            positions.len()
        ))
    };
    let mut batches = 0usize;
    for item in source {
        let (batch, pixels) = item?;
        for (i, why) in &batch.skipped {
            tally.skipped.push((*i, samples[*i].name(), why.clone()));
        }
        let b = batch.indices.len();
        let feats = &batch.feats;
        if b > 0 {
            let (top, scores) = match (recheck.as_mut(), &pixels) {
                (Some(r), Some(pixels)) => {
                    let logits = zeroshot::logits(feats, &clf_t)?;
                    let labels: Vec<Option<usize>> = batch
                        .indices
                        .iter()
                        .map(|&i| Some(samples[i].label))
                        .collect();
                    let before = r.images;
                    let out = r.topk(pixels, &logits, &labels, 5)?;
                    tally.rechecked += r.images - before;
                    out
                }
                _ => zeroshot::topk(feats, &clf_t, 5)?,
            };
            // A multi-label set keeps every class's score for its average precision.
            if let Some(targets) = &plan.targets {
                let rows = zeroshot::logits(feats, &clf_t)?.to_vec2::<f32>()?;
                for (&i, scores) in batch.indices.iter().zip(rows) {
                    tally.multilabel.push(zeroshot::Scored {
                        index: i,
                        positives: targets[i].clone(),
                        scores,
                    });
                }
            }
            for ((&i, t), sc) in batch.indices.iter().zip(top).zip(scores) {
                let smp = &samples[i];
                let p = Prediction {
                    index: i,
                    path: smp.name(),
                    label: smp.label,
                    top: t,
                    scores: sc,
                };
                if !spooling {
                    tally.add(p);
                    continue;
                }
                tally.count(&p);
                if let Some(w) = spool.as_mut() {
                    let row = results::prediction_row(&p);
                    w.write_all(row.as_bytes()).map_err(spool_io)?;
                    spool_len += row.len() as u64;
                }
            }
        }
        done += b + batch.skipped.len();
        bar.set(done as u64);
        batches += 1;
        if let Some(k) = kept.as_mut() {
            k.push(batch);
        }
        let stopping = stop.load(Ordering::SeqCst);
        if stopping || batches.is_multiple_of(20) {
            if let Some(w) = spool.as_mut() {
                w.flush().map_err(spool_io)?;
            }
            save_progress(done, &tally, spool_len);
        }
        if stopping {
            bar.finish();
            return Err(interrupted_after(done));
        }
    }
    bar.finish();
    if let Some(w) = spool.as_mut() {
        w.flush().map_err(spool_io)?;
    }
    if stop.load(Ordering::SeqCst) {
        save_progress(done, &tally, spool_len);
        return Err(interrupted_after(done));
    }
    let _ = std::fs::remove_file(&progress_path);
    if let (Some((memo, key)), Some(k)) = (memo_key, kept) {
        if let Ok(mut runs) = memo.runs.lock() {
            runs.insert(key, Arc::new(k));
        }
    }
    Ok(ImagesRun {
        tally,
        elapsed: t0.elapsed().as_secs_f64(),
        spool: spool_path,
        margin: recheck.and_then(|r| r.margin()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_read_collections_and_files() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("datasets.txt");
        std::fs::write(&list, "cars\n\n  wds/flowers \n").unwrap();
        let spec = format!("imagenet+{}+imagenet_robustness", list.display());
        let got = dataset_names(&spec).unwrap();
        assert_eq!(
            got,
            [
                "imagenet",
                "cars",
                "wds/flowers",
                "imagenetv2",
                "imagenet_sketch",
                "imagenet-a",
                "imagenet-r",
                "objectnet"
            ]
        );
        let vtab = dataset_names("vtab").unwrap();
        assert_eq!(
            (vtab[17].as_str(), vtab[18].as_str()),
            ("sun397", "vtab/svhn")
        );
        assert!(!vtab.iter().any(|d| d == "vtab/cifar10"));
        let plus = dataset_names("cars+vtab+").unwrap();
        assert_eq!((plus[0].as_str(), plus[1].as_str()), ("cars", "imagenet1k"));
        assert_eq!(plus[18].as_str(), "vtab/caltech101");
        assert_eq!(spec_parts("vtab+"), ["vtab+"]);
        assert_eq!(spec_parts("cars+vtab++mnist"), ["cars", "vtab+", "mnist"]);
        assert_eq!(spec_parts("vtab+mnist"), ["vtab", "mnist"]);
        assert_eq!(spec_parts("vtab/svhn+cars"), ["vtab/svhn", "cars"]);
        // Every dataset of the collections is one read here: a VTAB task or a known name.
        let tasks = data::vtab::names();
        let known = data::labels::accepted_names();
        for (name, n) in [("vtab", 19), ("vtab+", 36)] {
            let got = dataset_names(name).unwrap();
            assert_eq!(got.len(), n, "{name}");
            for d in &got {
                // ObjectNet's class names come with its download.
                assert!(
                    tasks.contains(d) || known.iter().any(|k| k == d) || d == "objectnet",
                    "{name}: {d}"
                );
            }
        }
        std::fs::write(&list, "\n").unwrap();
        let e = dataset_names(&list.display().to_string()).unwrap_err();
        assert!(e.to_string().contains("names no dataset"), "{e}");
    }

    #[test]
    fn clip_benchmark_placeholders_name_one_root_per_dataset() {
        let p = Path::new("/d/wds_{dataset_cleaned}/{dataset}");
        assert_eq!(
            per_dataset_root(p, "wds/cars"),
            Some(PathBuf::from("/d/wds_wds-cars/wds/cars"))
        );
        // Brace ranges of shard lists are not placeholders.
        assert_eq!(per_dataset_root(Path::new("/d/{0..9}.tar"), "x"), None);
    }
}
