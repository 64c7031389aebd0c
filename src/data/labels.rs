//! Label sets: class names (in torchvision's label order) and prompt templates, built in for
//! ImageNet, its variants (V2, Sketch, R, A) and the other datasets the reference evaluates, or
//! read from files; upstream's own lists (`--classnames-from upstream`) and its Chinese ImageNet
//! prompts (`--zeroshot-type zh`). Class names from CLIP's prompt lists and the clip_benchmark
//! package, templates from clip_benchmark, upstream's from its repository; see
//! configs/data/LICENSES.md.

use super::Error;
use std::path::Path;

macro_rules! data {
    ($($name:literal),* $(,)?) => {
        /// (name, class names, the dataset's own templates)
        const DATA: &[(&str, &str, &str)] = &[
            $(($name,
               include_str!(concat!("../../configs/data/datasets/", $name, "_classnames.txt")),
               include_str!(concat!("../../configs/data/datasets/", $name, "_templates.txt")))),*
        ];
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

data!(
    "cifar10",
    "cifar100",
    "caltech",
    "car",
    "flowers",
    "food",
    "sun",
    "dtd",
    "aircraft",
    "pet",
    "sat",
    "gtsrb",
    "country211",
    "renderedsst2",
    "fer2013",
    "mnist",
    "stl10",
    "voc2007",
    "pcam"
);

macro_rules! upstream {
    ($($name:literal),* $(,)?) => {
        /// Upstream's `data_classnames` (imagenet_zeroshot_data_en.py), as it lists them.
        const UPSTREAM: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../configs/data/upstream/", $name, "_classnames.txt")))),*
        ];
    };
}

upstream!(
    "cifar10", "cifar100", "caltech", "car", "flowers", "food", "sun", "dtd", "aircraft", "pet",
    "sat"
);

/// ImageNet's evaluation variants: name and how their folders are named.
pub const IMAGENET_VARIANTS: &[&str] = &[
    "imagenet-v2",
    "imagenet-sketch",
    "imagenet-r",
    "imagenet-a",
    "imagenet-o",
];

/// CLIP_benchmark's names of the built-in datasets (its `--dataset` values), and ours.
const ALIASES: &[(&str, &str)] = &[
    ("imagenet1k", "imagenet"),
    // CLIP_benchmark's ImageFolder of ROOT/val without torchvision's devkit check.
    ("imagenet1k-unverified", "imagenet"),
    ("imagenetv2", "imagenet-v2"),
    ("imagenet_sketch", "imagenet-sketch"),
    ("cars", "car"),
    ("fgvc_aircraft", "aircraft"),
    ("pets", "pet"),
    ("food101", "food"),
    ("sun397", "sun"),
    ("eurosat", "sat"),
    ("caltech101", "caltech"),
    ("voc2007_multilabel", "voc2007"),
];

/// Our name for `dataset`: itself, or the built-in one a CLIP_benchmark name (`cars`,
/// `wds/cars`) stands for.
pub fn canonical(dataset: &str) -> &str {
    let bare = dataset.strip_prefix("wds/").unwrap_or(dataset);
    ALIASES.iter().find(|a| a.0 == bare).map_or(bare, |a| a.1)
}

/// Whether `dataset` is CLIP_benchmark's `caltech101`, whose Caltech101 keeps
/// `BACKGROUND_Google` as a class (102 classes, `background` first); ours (`caltech`) is
/// torchvision's, without it.
pub fn caltech_with_background(dataset: &str) -> bool {
    dataset.strip_prefix("wds/").unwrap_or(dataset) == "caltech101"
}

/// Whether an ImageFolder read as `dataset` has its images converted to RGB before the
/// resize: CLIP_benchmark's ImageFolder sets (torchvision's `pil_loader`): `imagenet1k` (its
/// `ImageNet`), `imagenet1k-unverified`, ImageNet-Sketch, -A, -R and -O, EuroSAT (`eurosat`)
/// and FER2013. The reference's own names (`imagenet`, `sat`, ...) and CLIP_benchmark's
/// ImageNetV2 open the file as it is, so their images resize in their own mode.
pub fn folder_converts_first(dataset: &str) -> bool {
    matches!(
        dataset,
        "imagenet1k"
            | "imagenet1k-unverified"
            | "imagenet_sketch"
            | "imagenet-sketch"
            | "imagenet-a"
            | "imagenet-r"
            | "imagenet-o"
            | "eurosat"
            | "fer2013"
    )
}

/// Whether `dataset` is CLIP_benchmark's `voc2007_multilabel`: VOC2007's images whole, each
/// with all its objects' classes, scored by mean average precision (`voc2007` scores each
/// object's box).
pub fn multilabel(dataset: &str) -> bool {
    dataset.strip_prefix("wds/").unwrap_or(dataset) == "voc2007_multilabel"
}

/// Where the class names come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamesFrom {
    /// Ours: the datasets' own label order (torchvision's).
    Builtin,
    /// Upstream's lists as the reference scores them (misaligned where upstream's are).
    Upstream,
}

/// The prompts' language (upstream's `--zeroshot_type`, CLIP_benchmark's `--language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    En,
    /// Upstream's Chinese ImageNet class names and templates.
    Zh,
    /// CLIP_benchmark's ImageNet class names and templates in Arabic, Chinese, Italian and
    /// Japanese (its `ar`, `cn`, `it`, `jp`).
    Ar,
    Cn,
    It,
    Jp,
}

impl Language {
    /// The name in outputs (`{language}`): upstream's `zh`, CLIP_benchmark's others.
    pub fn name(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh",
            Self::Ar => "ar",
            Self::Cn => "cn",
            Self::It => "it",
            Self::Jp => "jp",
        }
    }

    /// CLIP_benchmark's `imagenet1k` entries of its `LANG_classnames.json` and
    /// `LANG_zeroshot_classification_templates.json`, as shipped (templates with `{c}`).
    fn clip_benchmark(self) -> Option<(Vec<String>, Vec<String>)> {
        let text = match self {
            Self::Ar => files::IMAGENET_AR,
            Self::Cn => files::IMAGENET_CN,
            Self::It => files::IMAGENET_IT,
            Self::Jp => files::IMAGENET_JP,
            Self::En | Self::Zh => return None,
        };
        #[derive(serde::Deserialize)]
        struct Lists {
            classnames: Vec<String>,
            templates: Vec<String>,
        }
        let l: Lists = serde_json::from_str(text).expect("valid built-in JSON");
        Some((l.classnames, l.templates))
    }
}

/// How class folders map to labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderScheme {
    /// Folders named by WordNet id; the label is the id's position in this list.
    Wordnet(Vec<String>),
    /// Folders named `0`..`n-1` (ImageNet-V2).
    Numeric(usize),
    /// Sorted folder order; one folder per class.
    Sorted,
}

/// A dataset's class names and folder scheme.
#[derive(Debug, Clone)]
pub struct LabelSet {
    pub classnames: Vec<String>,
    pub scheme: FolderScheme,
}

fn imagenet_names(lang: Language) -> Vec<String> {
    match lang {
        Language::En => lines(files::IMAGENET_CLASSNAMES),
        Language::Zh => lines(files::IMAGENET_CLASSNAMES_ZH),
        _ => lang.clip_benchmark().map(|l| l.0).unwrap_or_default(),
    }
}

/// The built-in label set of `dataset` (None: not a built-in name).
pub fn label_set(
    dataset: &str,
    from: NamesFrom,
    lang: Language,
) -> Result<Option<LabelSet>, Error> {
    let given = dataset;
    let dataset = canonical(dataset);
    let imagenet_family = dataset == "imagenet" || IMAGENET_VARIANTS.contains(&dataset);
    if lang == Language::Zh && !imagenet_family {
        return Err(Error::Labels(format!(
            "--zeroshot-type zh: upstream has Chinese class names for ImageNet only, not `{dataset}`"
        )));
    }
    if lang != Language::En && !imagenet_family {
        return Err(Error::Labels(format!(
            "--language {}: CLIP_benchmark has {} class names for ImageNet only, not `{dataset}`",
            lang.name(),
            lang.name()
        )));
    }
    if imagenet_family {
        // Upstream's English ImageNet names are ours (same list), so `from` changes nothing.
        let names = imagenet_names(lang);
        let synsets = lines(files::IMAGENET_SYNSETS);
        let subset = |list: &str| -> LabelSet {
            let wnids = lines(list);
            let classnames = wnids
                .iter()
                .map(|w| {
                    names[synsets
                        .binary_search(w)
                        .expect("subset wnid among the 1000")]
                    .clone()
                })
                .collect();
            LabelSet {
                classnames,
                scheme: FolderScheme::Wordnet(wnids),
            }
        };
        return Ok(Some(match dataset {
            "imagenet-v2" => LabelSet {
                classnames: names,
                scheme: FolderScheme::Numeric(1000),
            },
            "imagenet-r" => subset(files::IMAGENET_R_WNIDS),
            "imagenet-a" => subset(files::IMAGENET_A_WNIDS),
            "imagenet-o" => subset(files::IMAGENET_O_WNIDS),
            _ => LabelSet {
                classnames: names,
                scheme: FolderScheme::Wordnet(synsets),
            },
        }));
    }
    let names = match from {
        NamesFrom::Builtin if caltech_with_background(given) => classnames(dataset)
            .map(|n| std::iter::once("background".to_string()).chain(n).collect()),
        NamesFrom::Builtin => classnames(dataset),
        NamesFrom::Upstream => match UPSTREAM.iter().find(|d| d.0 == dataset) {
            Some(d) => Some(lines(d.1)),
            None if NAMES.contains(&dataset) => {
                return Err(Error::Labels(format!(
                    "--classnames-from upstream: upstream has no class list for `{dataset}` (it evaluates ImageNet and 11 others); use builtin"
                )))
            }
            None => None,
        },
    };
    Ok(names.map(|classnames| LabelSet {
        classnames,
        scheme: FolderScheme::Sorted,
    }))
}

/// Data files shipped with the binary.
pub mod files {
    pub const IMAGENET_CLASSNAMES: &str =
        include_str!("../../configs/data/imagenet_classnames.txt");
    pub const IMAGENET_TEMPLATES: &str = include_str!("../../configs/data/imagenet_templates.txt");
    pub const IMAGENET_SYNSETS: &str = include_str!("../../configs/data/imagenet_synsets.txt");
    pub const IMAGENET_R_WNIDS: &str = include_str!("../../configs/data/imagenet_r_wnids.txt");
    pub const IMAGENET_A_WNIDS: &str = include_str!("../../configs/data/imagenet_a_wnids.txt");
    pub const IMAGENET_O_WNIDS: &str = include_str!("../../configs/data/imagenet_o_wnids.txt");
    pub const IMAGENET_CLASSNAMES_ZH: &str =
        include_str!("../../configs/data/upstream/imagenet_classnames_zh.txt");
    pub const IMAGENET_TEMPLATES_ZH: &str =
        include_str!("../../configs/data/upstream/imagenet_templates_zh.txt");
    pub const IMAGENET_AR: &str =
        include_str!("../../configs/data/clip_benchmark/imagenet1k_ar.json");
    pub const IMAGENET_CN: &str =
        include_str!("../../configs/data/clip_benchmark/imagenet1k_cn.json");
    pub const IMAGENET_IT: &str =
        include_str!("../../configs/data/clip_benchmark/imagenet1k_it.json");
    pub const IMAGENET_JP: &str =
        include_str!("../../configs/data/clip_benchmark/imagenet1k_jp.json");
}

pub fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Our built-in names (CLIP_benchmark's names for them are accepted too: [`canonical`]).
pub fn known_datasets() -> Vec<&'static str> {
    let mut v = vec!["imagenet"];
    v.extend(IMAGENET_VARIANTS.iter().copied());
    v.extend(NAMES.iter().copied());
    v
}

/// Every accepted name: ours, then CLIP_benchmark's.
pub fn accepted_names() -> Vec<&'static str> {
    let mut v = known_datasets();
    v.extend(ALIASES.iter().map(|a| a.0));
    v
}

/// Reads a class-name file (one per line).
pub fn read_classnames(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Path {
        path: path.into(),
        msg: format!("cannot read class names (--classnames): {e}"),
    })?;
    let names = lines(&text);
    if names.is_empty() {
        return Err(Error::Path {
            path: path.into(),
            msg: "class-name file is empty (--classnames)".into(),
        });
    }
    Ok(names)
}

/// `--classnames` for `dataset`: a CLIP_benchmark class-name JSON (its
/// `--custom_classname_file`: an object from dataset name to its list of names, looked up as
/// `read_json_prompts` does but without the `imagenet1k` fallback, as there) when the file
/// ends in `.json`, else one name per line.
pub fn read_classnames_for(path: &Path, dataset: &str) -> Result<Vec<String>, Error> {
    if !is_json(path) {
        return read_classnames(path);
    }
    let (key, entry) = json_entry(path, "--classnames", "class names", dataset, None)?;
    json_strings(path, "--classnames", &entry, &format!("`{key}`"))
}

fn json_fail(path: &Path, flag: &str, msg: String) -> Error {
    Error::Path {
        path: path.into(),
        msg: format!("{msg} ({flag})"),
    }
}

/// The entry for `dataset` in a CLIP_benchmark JSON file (an object from dataset name to
/// `values`), under the first of its `lookup_keys`, else under `fallback`: the key and the entry.
fn json_entry(
    path: &Path,
    flag: &str,
    values: &str,
    dataset: &str,
    fallback: Option<&'static str>,
) -> Result<(String, serde_json::Value), Error> {
    let fail = |msg: String| json_fail(path, flag, msg);
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
    let serde_json::Value::Object(mut map) = v else {
        return Err(fail(format!("not an object from dataset name to {values}")));
    };
    let bare = short_name(dataset);
    let mut keys = lookup_keys(dataset);
    keys.extend(fallback);
    let missing = match fallback {
        Some(f) => format!("no entry for `{bare}` (nor `{f}`)"),
        None => format!("no entry for `{bare}`"),
    };
    keys.iter()
        .find_map(|k| map.remove(*k).map(|e| (k.to_string(), e)))
        .ok_or_else(|| fail(missing))
}

/// A non-empty list of strings (`what` names it in errors).
fn json_strings(
    path: &Path,
    flag: &str,
    v: &serde_json::Value,
    what: &str,
) -> Result<Vec<String>, Error> {
    let out: Vec<String> = v
        .as_array()
        .and_then(|l| l.iter().map(|x| x.as_str().map(String::from)).collect())
        .ok_or_else(|| json_fail(path, flag, format!("{what} is not a list of strings")))?;
    if out.is_empty() {
        return Err(json_fail(path, flag, format!("{what} is empty")));
    }
    Ok(out)
}

/// Whether `--classnames` / `--templates` names a JSON file (by its extension).
pub fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// The name without its `wds/`, `tfds/` or `vtab/` prefix (CLIP_benchmark's short name).
fn short_name(dataset: &str) -> &str {
    ["wds/", "tfds/", "vtab/"]
        .iter()
        .find_map(|p| dataset.strip_prefix(p))
        .unwrap_or(dataset)
}

/// The keys a dataset's entry may have in CLIP_benchmark's JSON files, in lookup order: the
/// name as given and without its `wds/`, `tfds/` or `vtab/` prefix (CLIP_benchmark's two), then
/// our name for it and its other names.
fn lookup_keys(dataset: &str) -> Vec<&str> {
    let short = short_name(dataset);
    let ours = canonical(short);
    let mut keys = vec![dataset, short, ours];
    keys.extend(ALIASES.iter().filter(|a| a.1 == ours).map(|a| a.0));
    keys.dedup();
    keys
}

/// A template with its class slot written `{}` (CLIP_benchmark's files write it `{c}`).
fn our_slot(t: String) -> String {
    if t.contains("{}") {
        t
    } else {
        t.replacen("{c}", "{}", 1)
    }
}

/// Reads a template file (one per line, `{}` marks the class name).
pub fn read_templates(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Path {
        path: path.into(),
        msg: format!("cannot read templates (--templates): {e}"),
    })?;
    let t: Vec<String> = lines(&text).into_iter().map(our_slot).collect();
    if t.is_empty() {
        return Err(Error::Path {
            path: path.into(),
            msg: "template file is empty (--templates)".into(),
        });
    }
    check_templates(&t).map_err(|e| match e {
        Error::Labels(msg) => Error::Path {
            path: path.into(),
            msg,
        },
        other => other,
    })?;
    Ok(t)
}

/// A dataset's entry in a CLIP_benchmark template JSON (its `--custom_template_file`).
#[derive(Debug, Clone, PartialEq)]
pub enum JsonPrompts {
    /// Templates, the class name's slot written `{}`.
    Templates(Vec<String>),
    /// Each class's own prompts, used as they are (CuPL's form), by class name.
    PerClass(std::collections::HashMap<String, Vec<String>>),
}

/// The entry of `dataset` in the template JSON at `path`: an object from dataset name to a
/// list of templates (`{c}` for the class) or to an object from class name to its prompts.
/// As CLIP_benchmark looks it up: the name without a `wds/`, `tfds/` or `vtab/` prefix (here
/// also any other name of the same built-in dataset), else `imagenet1k`'s entry.
pub fn read_json_prompts(path: &Path, dataset: &str) -> Result<JsonPrompts, Error> {
    let (key, entry) = json_entry(
        path,
        "--templates",
        "templates",
        dataset,
        Some("imagenet1k"),
    )?;
    let strings = |v: &serde_json::Value, what: &str| json_strings(path, "--templates", v, what);
    match entry {
        serde_json::Value::Object(per) => per
            .iter()
            .map(|(c, p)| Ok((c.clone(), strings(p, &format!("`{key}`: `{c}`"))?)))
            .collect::<Result<_, _>>()
            .map(JsonPrompts::PerClass),
        other => {
            let t: Vec<String> = strings(&other, &format!("`{key}`"))?
                .into_iter()
                .map(our_slot)
                .collect();
            check_templates(&t).map_err(|e| Error::Path {
                path: path.into(),
                msg: format!("`{key}`: {e}"),
            })?;
            Ok(JsonPrompts::Templates(t))
        }
    }
}

/// Every template must have a `{}` slot for the class name.
pub fn check_templates(t: &[String]) -> Result<(), Error> {
    for (i, l) in t.iter().enumerate() {
        if !l.contains("{}") {
            return Err(Error::Labels(format!(
                "template on line {} has no `{{}}` for the class name: {l:?} (--templates)",
                i + 1
            )));
        }
    }
    Ok(())
}

pub fn imagenet_templates() -> Vec<String> {
    lines(files::IMAGENET_TEMPLATES)
}

/// The ImageNet templates in `lang`: the 80 (upstream's Chinese translation for zh), or
/// CLIP_benchmark's list for its languages.
pub fn imagenet_templates_in(lang: Language) -> Vec<String> {
    match lang {
        Language::En => imagenet_templates(),
        Language::Zh => lines(files::IMAGENET_TEMPLATES_ZH),
        _ => lang
            .clip_benchmark()
            .map(|l| l.1.into_iter().map(our_slot).collect())
            .unwrap_or_default(),
    }
}

pub fn fill(template: &str, class: &str) -> String {
    template.replacen("{}", class, 1)
}

/// Maps the folders to labels by `scheme`: WordNet-id folders get their id's position in the
/// label set (so a subset of the folders is scored against every class), numbered folders their
/// number; otherwise sorted folder order, with one name per folder. `names_file`: where the
/// class names came from (`--classnames`), None for a built-in list of `dataset`.
pub fn folder_labels(
    folders: &[String],
    scheme: &FolderScheme,
    dataset: &str,
    classnames: &[String],
    names_file: Option<&Path>,
) -> Result<Vec<usize>, Error> {
    match scheme {
        FolderScheme::Wordnet(wnids) => {
            let sorted = wnids.windows(2).all(|w| w[0] < w[1]);
            return folders
                .iter()
                .map(|f| {
                    let found = if sorted {
                        wnids.binary_search(f).ok()
                    } else {
                        wnids.iter().position(|w| w == f)
                    };
                    found.ok_or_else(|| {
                        Error::Labels(if wnids.len() == 1000 {
                            format!("class folder `{f}` is not an ImageNet WordNet id (n01440764 ...); use --classnames for other label sets")
                        } else {
                            format!("class folder `{f}` is not one of the {} WordNet ids of `{dataset}`", wnids.len())
                        })
                    })
                })
                .collect();
        }
        FolderScheme::Numeric(n) => {
            return folders
                .iter()
                .map(|f| {
                    f.parse::<usize>().ok().filter(|i| i < n).ok_or_else(|| {
                        Error::Labels(format!(
                            "class folder `{f}` of `{dataset}` is not a class number 0..{}",
                            n - 1
                        ))
                    })
                })
                .collect();
        }
        FolderScheme::Sorted => {}
    }
    if classnames.len() != folders.len() {
        let source = match names_file {
            Some(p) => format!("--classnames {}", p.display()),
            None => format!("the built-in `{dataset}` list"),
        };
        // CLIP_benchmark's Caltech101 counts the background folder; torchvision's does not.
        let hint = if names_file.is_none()
            && caltech_with_background(dataset)
            && folders.len() + 1 == classnames.len()
        {
            " (CLIP_benchmark's caltech101 includes BACKGROUND_Google; --test-dataset caltech is torchvision's 101 classes without it)"
        } else {
            ""
        };
        return Err(Error::Labels(format!(
            "{} class names in {source} but {} class folders: the names must list one class per folder, in sorted folder order{hint}",
            classnames.len(),
            folders.len()
        )));
    }
    Ok((0..folders.len()).collect())
}

/// The built-in class names of one of the other datasets.
pub fn classnames(name: &str) -> Option<Vec<String>> {
    let name = canonical(name);
    DATA.iter().find(|d| d.0 == name).map(|d| lines(d.1))
}

/// The dataset's own templates (`--templates dataset`); the reference uses the 80 ImageNet ones.
pub fn templates(name: &str) -> Option<Vec<String>> {
    let name = canonical(name);
    // ObjectNet's are ImageNet's, as CLIP_benchmark has none of its own for it.
    if name == "imagenet" || name == "objectnet" || IMAGENET_VARIANTS.contains(&name) {
        return Some(imagenet_templates());
    }
    DATA.iter().find(|d| d.0 == name).map(|d| lines(d.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_benchmarks_languages_are_its_imagenet_lists() {
        // Counts and ends of CLIP_benchmark's LANG_classnames.json and
        // LANG_zeroshot_classification_templates.json (imagenet1k), `{c}` read as `{}`.
        for (lang, templates, first, last) in [
            (Language::Ar, 55, "سمك التنش", "{}"),
            (Language::Cn, 80, "丁鲷", "{}的照片。"),
            (Language::It, 49, "una tinca", "una brutta foto di {}"),
            (Language::Jp, 37, "テンチ", "{}の悪い写真"),
        ] {
            let set = label_set("imagenet1k", NamesFrom::Builtin, lang)
                .unwrap()
                .unwrap();
            assert_eq!(set.classnames.len(), 1000, "{lang:?}");
            assert_eq!(set.classnames[0], first, "{lang:?}");
            let t = imagenet_templates_in(lang);
            assert_eq!(t.len(), templates, "{lang:?}");
            assert_eq!(t[0], last, "{lang:?}");
            assert!(t.iter().all(|t| t.matches("{}").count() == 1), "{lang:?}");
            // The variants take their subsets of the same names, as CLIP_benchmark does.
            let r = label_set("imagenet-r", NamesFrom::Builtin, lang)
                .unwrap()
                .unwrap();
            assert_eq!(r.classnames.len(), 200);
            assert!(label_set("cars", NamesFrom::Builtin, lang).is_err());
        }
        // Arabic names keep CLIP_benchmark's spaces (the tokenizer's cleaning folds them).
        let ar = imagenet_names(Language::Ar);
        assert_eq!(ar[985], "زهرة اللؤلؤ ");
    }

    #[test]
    fn template_json_entries_are_found_as_clip_benchmark_finds_them() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("t.json");
        std::fs::write(
            &f,
            r#"{"pets": ["a {c}, a pet."], "imagenet1k": ["itap of a {c}."], "x": 3}"#,
        )
        .unwrap();
        let t = |name: &str| read_json_prompts(&f, name).unwrap();
        let pets = JsonPrompts::Templates(vec!["a {}, a pet.".into()]);
        // Ours and CLIP_benchmark's name, with or without a prefix; else imagenet1k's.
        for name in ["pet", "pets", "wds/pets", "vtab/pets"] {
            assert_eq!(t(name), pets, "{name}");
        }
        // CLIP_benchmark looks up the prefixed name first, then the bare one.
        let g = d.path().join("g.json");
        std::fs::write(
            &g,
            r#"{"svhn": ["a {c}."], "vtab/svhn": ["the {c}."], "eurosat/rgb": ["an {c}."]}"#,
        )
        .unwrap();
        let tg = |name: &str| read_json_prompts(&g, name).unwrap();
        assert_eq!(
            tg("vtab/svhn"),
            JsonPrompts::Templates(vec!["the {}.".into()])
        );
        assert_eq!(tg("wds/svhn"), JsonPrompts::Templates(vec!["a {}.".into()]));
        assert_eq!(
            tg("tfds/eurosat/rgb"),
            JsonPrompts::Templates(vec!["an {}.".into()])
        );
        assert_eq!(
            t("cars"),
            JsonPrompts::Templates(vec!["itap of a {}.".into()])
        );
        let e = read_json_prompts(&f, "x").unwrap_err().to_string();
        assert!(
            e.contains("t.json") && e.contains("not a list of strings"),
            "{e}"
        );
        std::fs::write(&f, r#"{"cars": {"audi": ["an audi."], "bmw": []}}"#).unwrap();
        let e = read_json_prompts(&f, "cars").unwrap_err().to_string();
        assert!(e.contains("`bmw` is empty"), "{e}");
        let e = read_json_prompts(&f, "flowers").unwrap_err().to_string();
        assert!(e.contains("no entry for `flowers`"), "{e}");
    }

    #[test]
    fn clip_benchmark_names_stand_for_ours() {
        for (theirs, ours) in ALIASES {
            assert!(known_datasets().contains(ours), "{ours}");
            let a = label_set(theirs, NamesFrom::Builtin, Language::En)
                .unwrap()
                .unwrap();
            let b = label_set(ours, NamesFrom::Builtin, Language::En)
                .unwrap()
                .unwrap();
            // CLIP_benchmark's Caltech101 adds its background class in front.
            let extra = usize::from(caltech_with_background(theirs));
            assert_eq!(a.classnames[extra..], b.classnames, "{theirs}");
            assert_eq!(a.scheme, b.scheme, "{theirs}");
            assert_eq!(templates(theirs), templates(ours), "{theirs}");
        }
        assert_eq!(canonical("wds/cars"), "car");
        assert_eq!(canonical("wds/cifar10"), "cifar10");
        assert_eq!(canonical("mnist"), "mnist");
        assert_eq!(classnames("pets").unwrap().len(), 37);
        assert!(label_set("vtab/pets", NamesFrom::Builtin, Language::En)
            .unwrap()
            .is_none());
    }

    #[test]
    fn imagenet_data_is_consistent() {
        assert_eq!(lines(files::IMAGENET_CLASSNAMES).len(), 1000);
        assert_eq!(imagenet_templates().len(), 80);
        let s = lines(files::IMAGENET_SYNSETS);
        assert_eq!(s.len(), 1000);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s[0], "n01440764");
        check_templates(&imagenet_templates()).unwrap();
    }

    #[test]
    fn wordnet_folders_map_to_their_index() {
        let folders = vec!["n01443537".to_string(), "n15075141".to_string()];
        let set = label_set("imagenet", NamesFrom::Builtin, Language::En)
            .unwrap()
            .unwrap();
        let l = folder_labels(&folders, &set.scheme, "imagenet", &[], None).unwrap();
        assert_eq!(l, vec![1, 999]);
        assert!(folder_labels(&["cats".into()], &set.scheme, "imagenet", &[], None).is_err());
    }

    #[test]
    fn imagenet_variants_label_their_folders() {
        let set = |d| {
            label_set(d, NamesFrom::Builtin, Language::En)
                .unwrap()
                .unwrap()
        };
        let r = set("imagenet-r");
        assert_eq!(r.classnames.len(), 200);
        // n01443537 (goldfish) is ImageNet-R's first class, n12267677 (acorn) its last.
        assert_eq!(
            (r.classnames[0].as_str(), r.classnames[199].as_str()),
            ("goldfish", "acorn")
        );
        let f = vec!["n01443537".to_string(), "n12267677".to_string()];
        assert_eq!(
            folder_labels(&f, &r.scheme, "imagenet-r", &[], None).unwrap(),
            [0, 199]
        );
        let e = folder_labels(&["n01440764".into()], &r.scheme, "imagenet-r", &[], None);
        assert!(e.unwrap_err().to_string().contains("200 WordNet ids"));
        let a = set("imagenet-a");
        assert_eq!(a.classnames.len(), 200);
        assert_eq!(a.classnames[0], "stingray");
        let o = set("imagenet-o");
        assert_eq!(o.classnames.len(), 200);
        assert_eq!(
            (o.classnames[0].as_str(), o.classnames[199].as_str()),
            ("goldfish", "hen of the woods mushroom")
        );
        let v2 = set("imagenet-v2");
        let f = vec!["0".to_string(), "10".to_string(), "999".to_string()];
        assert_eq!(
            folder_labels(&f, &v2.scheme, "imagenet-v2", &[], None).unwrap(),
            [0, 10, 999]
        );
        assert!(folder_labels(&["1000".into()], &v2.scheme, "imagenet-v2", &[], None).is_err());
        assert_eq!(set("imagenet-sketch").classnames.len(), 1000);
        let zh = label_set("imagenet-r", NamesFrom::Builtin, Language::Zh)
            .unwrap()
            .unwrap();
        assert_eq!(zh.classnames[0], "金鱼");
        assert!(label_set("cifar10", NamesFrom::Builtin, Language::Zh).is_err());
        assert_eq!(imagenet_templates_in(Language::Zh).len(), 80);
        check_templates(&imagenet_templates_in(Language::Zh)).unwrap();
    }

    /// Upstream's lists: alphabetical where torchvision's order is the dataset's own (flowers,
    /// car), Caltech with its background class, SUN with 362 names.
    #[test]
    fn upstream_lists_differ_where_upstream_does() {
        let up = |d| {
            label_set(d, NamesFrom::Upstream, Language::En)
                .unwrap()
                .unwrap()
                .classnames
        };
        let ours = |d| classnames(d).unwrap();
        assert_eq!(up("cifar10"), ours("cifar10"));
        for d in ["flowers", "car"] {
            let (u, o) = (up(d), ours(d));
            assert_eq!(u.len(), o.len(), "{d}");
            assert_ne!(u, o, "{d}");
            let mut sorted = u.clone();
            sorted.sort();
            assert_eq!(u, sorted, "{d} is alphabetical upstream");
        }
        assert_eq!((up("caltech").len(), ours("caltech").len()), (102, 101));
        let cb = label_set("caltech101", NamesFrom::Builtin, Language::En)
            .unwrap()
            .unwrap()
            .classnames;
        assert_eq!(
            (cb.len(), cb[0].as_str(), &cb[1..]),
            (102, "background", &ours("caltech")[..])
        );
        let folders: Vec<String> = (0..101).map(|i| format!("{i:03}")).collect();
        let e = folder_labels(&folders, &FolderScheme::Sorted, "caltech101", &cb, None);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("--test-dataset caltech is"));
        assert_eq!((up("sun").len(), ours("sun").len()), (362, 397));
    }

    /// Lengths and anchor classes of the torchvision datasets' label order.
    #[test]
    fn class_lists_follow_torchvision() {
        type Anchors = &'static [(usize, &'static str)];
        let expect: &[(&str, usize, Anchors)] = &[
            (
                "cifar10",
                10,
                &[(0, "airplane"), (1, "automobile"), (9, "truck")],
            ),
            (
                "cifar100",
                100,
                &[(0, "apple"), (1, "aquarium fish"), (99, "worm")],
            ),
            // torchvision's Caltech101 drops BACKGROUND_Google; Faces, Faces_easy come first.
            (
                "caltech",
                101,
                &[
                    (0, "off-center face"),
                    (1, "centered face"),
                    (4, "accordion"),
                    (100, "yin and yang symbol"),
                ],
            ),
            (
                "car",
                196,
                &[
                    (0, "AM General Hummer SUV 2000"),
                    (195, "smart fortwo Convertible 2012"),
                ],
            ),
            (
                "flowers",
                102,
                &[(0, "pink primrose"), (101, "blackberry lily")],
            ),
            ("food", 101, &[(0, "apple pie"), (100, "waffles")]),
            ("sun", 397, &[(0, "abbey"), (396, "youth hostel")]),
            ("dtd", 47, &[(0, "banded"), (46, "zigzagged")]),
            ("aircraft", 100, &[(0, "707-320"), (99, "Yak-42")]),
            ("pet", 37, &[(0, "Abyssinian"), (36, "Yorkshire Terrier")]),
            // torchvision's EuroSAT: AnnualCrop, Forest, HerbaceousVegetation, ..., SeaLake.
            (
                "sat",
                10,
                &[
                    (0, "annual crop land"),
                    (2, "brushland or shrubland"),
                    (9, "lake or sea"),
                ],
            ),
            // CLIP_benchmark's lists for torchvision's label order (GTSRB's folders 00000..,
            // Country211's ISO codes sorted, FER2013's Kaggle folders, RenderedSST2's classes).
            (
                "gtsrb",
                43,
                &[(0, "red and white circle 20 kph speed limit"), (14, "stop")],
            ),
            (
                "country211",
                211,
                &[
                    (0, "Andorra"),
                    (1, "United Arab Emirates"),
                    (210, "Zimbabwe"),
                ],
            ),
            ("fer2013", 7, &[(0, "angry"), (6, "surprised")]),
            ("renderedsst2", 2, &[(0, "negative"), (1, "positive")]),
            // MNIST's digits; STL-10's `class_names.txt`; VOC's `object_categories`.
            ("mnist", 10, &[(0, "0"), (9, "9")]),
            ("stl10", 10, &[(0, "airplane"), (7, "monkey"), (9, "truck")]),
            (
                "voc2007",
                20,
                &[(0, "aeroplane"), (10, "diningtable"), (19, "tvmonitor")],
            ),
            (
                "pcam",
                2,
                &[
                    (0, "lymph node"),
                    (1, "lymph node containing metastatic tumor tissue"),
                ],
            ),
        ];
        for (name, n, anchors) in expect {
            let c = classnames(name).unwrap();
            assert_eq!(c.len(), *n, "{name}");
            for (i, v) in anchors.iter() {
                assert_eq!(c[*i], *v, "{name}[{i}]");
            }
            let mut uniq = c.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), c.len(), "{name} has duplicates");
            let t = templates(name).unwrap();
            assert!(!t.is_empty());
            check_templates(&t).unwrap();
        }
        assert_eq!(NAMES.len(), 19);
    }
}
