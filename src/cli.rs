//! Command-line arguments, typed. Upstream spellings (`--visual_model`, `--test_data_path`,
//! `--test_dataset`, `--batch_size_test`, `--evaluate`/`-e`) are accepted as aliases.

use crate::device::{DeviceSpec, Precision};
use crate::engine::EngineChoice;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pyramidclip",
    version,
    about = "Zero-shot evaluation of PyramidCLIP and other CLIP-family checkpoints (OpenAI CLIP, open_clip) on CPU or CUDA",
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Zero-shot top-1/top-5 on a labelled image set (the upstream `main.py --evaluate`,
    /// CLIP_benchmark's zeroshot_classification).
    Eval(EvalArgs),
    /// Image and/or text features to a safetensors file.
    Embed(EmbedArgs),
    /// Zero-shot image-text retrieval: recall@K both ways on a captioned image set.
    Retrieval(RetrievalArgs),
    /// Image-caption selection (Winoground, SugarCREPE): which caption each image picks, and
    /// which image each caption picks, per instance.
    #[command(name = "caption-selection", alias = "image-caption-selection")]
    CaptionSelection(SelectionArgs),
    /// CoCa captioning (CLIP_benchmark's captioning task): each image's caption from
    /// open_clip's beam search, scored against the set's captions (BLEU, ROUGE-L, CIDEr).
    Captioning(CaptioningArgs),
    /// Logistic-regression probe on frozen image features (train/test ImageFolders, webdataset,
    /// VTAB or TFDS splits).
    LinearProbe(LinearProbeArgs),
    /// Per-image similarities and softmax over texts (the upstream `demo.py`).
    Predict(PredictArgs),
    /// Token ids of texts, one JSON array per line.
    Tokenize(TokenizeArgs),
    /// Preprocessed pixels of images to a safetensors file.
    Preprocess(PreprocessArgs),
    /// Format, architecture, epoch and parameters of a checkpoint.
    Inspect(InspectArgs),
    /// Rewrites a checkpoint as safetensors (architecture in the metadata).
    Convert(ConvertArgs),
    /// Throughput of the encoders, the matrix multiply, preprocessing or a whole evaluation.
    Bench(BenchArgs),
    /// Combines the partial results of a sharded evaluation.
    Merge(MergeArgs),
    /// Tabulates result JSON files (ours or CLIP_benchmark's): model x dataset, in percent.
    Results(ResultsArgs),
    /// Development tools (synthetic data, random checkpoints, feature comparison).
    #[command(hide = true, subcommand)]
    Dev(DevCommand),
}

/// Not part of the product's interface: used by the scripts under `scripts/`.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Writes a synthetic ImageFolder of JPEGs (GPU checks, benchmarks).
    Synth(SynthArgs),
    /// Compares two `embed` outputs: per-row cosine and top-1 agreement.
    Compare(CompareArgs),
    /// Writes a random-weight checkpoint of an architecture (benchmarks and GPU checks).
    RandomCheckpoint(RandomCheckpointArgs),
    /// Checks AMX bf16 products against the AVX512-BF16 kernel (run as a child process before
    /// AMX is used: exit 0 when they agree).
    AmxProbe,
    /// Fits the linear probe on given features (`train_x`, `train_y`, `test_x`, `test_y` in a
    /// safetensors file) and prints the fit as JSON (scripts/probe_scale.py).
    ProbeFit(ProbeFitArgs),
    /// Runs the candle engine's fused ops on a device and on the CPU over the same random
    /// inputs and prints each op's largest relative difference (exit 1 when one is over its
    /// bound): the GPU kernels' check on the GPU machine.
    KernelCheck {
        #[arg(long, default_value = "cuda")]
        device: String,
    },
    /// Prints a MATLAB file's variables as JSON, as `data::mat` reads them
    /// (scripts/dev/check_mat.py).
    Mat { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct ProbeFitArgs {
    pub features: PathBuf,
    /// Use the rows at unit L2 norm.
    #[arg(long)]
    pub normalize: bool,
    #[arg(long, default_value_t = 0.316)]
    pub c: f64,
    #[arg(long, default_value_t = 1000, value_parser = at_least_one::<u64>)]
    pub max_iter: u64,
    /// `adamw`: CLIP_benchmark's fit (the rows L2-normalised in f32 first), one training with
    /// --weight-decay.
    #[arg(long, value_enum, default_value = "lbfgs")]
    pub fit: ProbeFit,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 10, value_parser = at_least_one::<usize>)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64, value_parser = at_least_one::<usize>)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// --fit adamw: CLIP_benchmark's whole evaluation, its weight-decay search on this share of
    /// the training rows held out.
    #[arg(long)]
    pub val_fraction: Option<f64>,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    pub out: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    #[arg(long, default_value_t = 4)]
    pub classes: usize,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    pub reference: PathBuf,
    pub candidate: PathBuf,
    #[arg(long, default_value_t = 0.9999)]
    pub min_cosine: f64,
    /// Minimum share of images whose best-matching text agrees.
    #[arg(long, default_value_t = 0.99)]
    pub min_top1: f64,
}

#[derive(Debug, Args)]
pub struct RandomCheckpointArgs {
    pub out: PathBuf,
    #[arg(long, alias = "visual_model")]
    pub visual_model: String,
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = StoreDType::F32)]
    pub dtype: StoreDType,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The native engine's tuning switches (hidden; each also read from its environment
/// variable), fixed when the model is built.
#[derive(Debug, Args, Clone, Default)]
pub struct NativeArgs {
    /// Matrix-multiply kernel family (a narrower one than the CPU's, for comparisons).
    #[arg(long, hide = true, value_enum, env = "PYRAMIDCLIP_GEMM")]
    pub gemm: Option<GemmKernel>,
    /// Read activations in place (1) or always pack them (0) instead of the measured rule.
    #[arg(long, hide = true, env = "PYRAMIDCLIP_GEMM_DIRECT", value_parser = switch)]
    pub gemm_direct: Option<bool>,
    /// Depth per pass of the fp32 products' cache blocks (speed only; the results do not
    /// depend on it).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_GEMM_KC", value_parser = clap::value_parser!(u32).range(1..))]
    pub gemm_kc: Option<u32>,
    /// Rows per packed block of the fp32 products (speed only).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_GEMM_MC", value_parser = clap::value_parser!(u32).range(1..))]
    pub gemm_mc: Option<u32>,
    /// Floats ahead of the depth step at which the fp32 kernel prefetches its weight panel (0:
    /// none; default by CPU: 384 on Intel with AVX-512, 0 elsewhere; speed only).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_GEMM_PREFETCH")]
    pub gemm_prefetch: Option<u32>,
    /// Use the blocking `bench --what blocking` stored for this CPU (1, default) or the
    /// family's default (0).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_GEMM_TUNED", value_parser = switch)]
    pub gemm_tuned: Option<bool>,
    /// Split CPU batches into one slice per thread (1, default) or not (0).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_SPLIT", value_parser = switch)]
    pub split_batch: Option<bool>,
    /// Megabytes of the widest activation a batch slice computes at once (default 16 in
    /// fp32, 8 with bf16 products).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_SLICE_MB", value_parser = clap::value_parser!(u32).range(1..))]
    pub slice_mb: Option<u32>,
    /// Winograd for 3x3 convolutions (1, default) or im2col (0).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_WINOGRAD", value_parser = switch)]
    pub winograd: Option<bool>,
    /// bf16 kernels for --precision bf16 where the CPU has them (1, default) or the fp32
    /// fallback (0).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_BF16", value_parser = switch)]
    pub bf16_kernels: Option<bool>,
    /// Those bf16 products on AMX tiles where the CPU has them and a probe passes (1,
    /// default) or through AVX512-BF16 (0).
    #[arg(long, hide = true, env = "PYRAMIDCLIP_AMX", value_parser = switch)]
    pub amx: Option<bool>,
}

/// `0`/`1` (also `false`/`true`, `off`/`on`).
fn switch(s: &str) -> Result<bool, String> {
    match s {
        "1" | "true" | "on" => Ok(true),
        "0" | "false" | "off" => Ok(false),
        _ => Err(format!("expected 0 or 1, got {s:?}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GemmKernel {
    Avx512,
    Avx2,
    Generic,
}

/// Where and how a model runs.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceSpec,
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// auto: native for the CPU in fp32, bf16 and amp, candle otherwise; native: our CPU
    /// kernels (fp32, bf16); candle: candle tensor ops on any device and precision.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,
    #[command(flatten)]
    pub native: NativeArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint (.pth/.pth.tar/.pt, zip or legacy, or .safetensors), a transformers CLIP
    /// folder, or a hub id (ORG/NAME) downloaded to the hub cache; without it, the model's
    /// file in ./pretrained_model/ or $PYRAMIDCLIP_PRETRAINED. `eval`, `retrieval`,
    /// `caption-selection` and `linear-probe` take several (one run per checkpoint, the data
    /// listed once).
    #[arg(long, short = 'e', visible_alias = "evaluate", num_args = 1..)]
    pub checkpoint: Vec<PathBuf>,
    /// Architecture name; detected from the checkpoint when omitted (RN50 when the checkpoint
    /// is looked up in pretrained_model/). The commands that take several checkpoints take
    /// several names: one per --checkpoint, or without --checkpoint each looked up in
    /// pretrained_model/.
    #[arg(long, alias = "visual_model", num_args = 1..)]
    pub visual_model: Vec<String>,
    /// Extra architectures in the upstream model_config.yml format.
    #[arg(long, alias = "model_config")]
    pub model_config: Option<PathBuf>,
    /// CLIP_benchmark's --pretrained_model: models as `MODEL,PRETRAINED` (an open_clip name
    /// and a tag or file, e.g. ViT-B-32-quickgelu,laion400m_e32), a text file of such lines, or
    /// its collections `openai` and `openclip_base`. Instead of --checkpoint/--visual-model.
    #[arg(long, alias = "pretrained_model", num_args = 1..)]
    pub pretrained_model: Vec<String>,
    /// Where open_clip downloaded its pretrained weights (CLIP_benchmark's --model_cache_dir,
    /// open_clip's cache_dir): a --checkpoint that is an open_clip tag (laion2b_s34b_b79k with
    /// --visual-model ViT-B-32) is looked up there. Default: the Hugging Face hub cache
    /// ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub), then ~/.cache/clip.
    #[arg(long, alias = "model_cache_dir")]
    pub model_cache_dir: Option<PathBuf>,
    /// A SigLIP or HF-text-tower model's HuggingFace tokenizer: its tokenizer.json, or the folder holding it
    /// (with tokenizer_config.json). Default: beside the checkpoint, else the model's tokenizer
    /// repo in the hub cache (where open_clip downloads it).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
    /// What torch.distributed.launch appends: the process's GPU on its node (LOCAL_RANK).
    #[arg(long = "local_rank", alias = "local-rank", hide = true)]
    pub local_rank: Option<usize>,
}

/// `I/N`: shard I of N, 0 <= I < N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for ShardSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected I/N with 0 <= I < N, e.g. 0/4 (got {s:?})");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NamesFrom {
    Builtin,
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ZeroshotType {
    En,
    Zh,
}

/// `eval --language`: CLIP_benchmark's zero-shot languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CbLanguage {
    En,
    Ar,
    Cn,
    It,
    Jp,
}

#[derive(Debug, Args, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Dataset root: DIR/val when it exists, else DIR, in ImageFolder layout; or a webdataset
    /// layout or shard list; or torchvision's download (CIFAR, Food-101, Pets, MNIST, VOC2007, ...);
    /// `{dataset}` / `{dataset_cleaned}` are replaced per dataset, as in CLIP_benchmark.
    #[arg(long, alias = "test_data_path")]
    pub test_data_path: PathBuf,
    /// imagenet (default) or another built-in name (CLIP_benchmark's too: imagenet1k, cars, ...); `a+b` evaluates several (each under DIR/a, DIR/b, or DIR when it holds their downloads); a part may be a text file of names (one per line) or a CLIP_benchmark collection (`imagenet_robustness`, `vtab`, `vtab+`).
    #[arg(long, alias = "test_dataset", default_value = "imagenet")]
    pub test_dataset: String,
    /// The split of a CLIP_benchmark webdataset directory (DIR/SPLIT/nshards.txt), of a
    /// torchvision download (train, val, trainval, ...), of a VTAB task (train, val, trainval,
    /// test, train800, val200, train800val200) or, for tfds/NAME, a TFDS split string
    /// (test, train[:10%]); default test.
    #[arg(long)]
    pub split: Option<String>,
    /// Class names, one per line, in sorted folder order; or a CLIP_benchmark class-name JSON
    /// (`--custom_classname_file`: dataset name -> list of names), FILE.json.
    #[arg(long)]
    pub classnames: Option<PathBuf>,
    /// builtin: the datasets' own label order; upstream: the reference's lists, as it scores
    /// them (flowers and car alphabetical, caltech with its background class).
    #[arg(long, value_enum, default_value_t = NamesFrom::Builtin, conflicts_with = "classnames")]
    pub classnames_from: NamesFrom,
    /// Prompt language (upstream's --zeroshot_type): zh uses upstream's Chinese ImageNet class
    /// names and templates.
    #[arg(long, alias = "zeroshot_type", value_enum, default_value_t = ZeroshotType::En)]
    pub zeroshot_type: ZeroshotType,
    /// CLIP_benchmark's --language for ImageNet and its variants: its class names and templates
    /// in Arabic, Chinese, Italian or Japanese (ar, cn, it, jp); en is the default lists.
    /// Several (`--language en cn`) evaluate each in turn, as CLIP_benchmark does; the output
    /// flags then need `{language}` in their names.
    #[arg(long, value_enum, num_args = 1.., conflicts_with = "zeroshot_type")]
    pub language: Vec<CbLanguage>,
    /// Templates, one per line with `{}` (or `{c}`) for the class name; `dataset` for the
    /// dataset's own; a `.json` file: CLIP_benchmark's template JSON (per dataset, templates or
    /// each class's own prompts).
    #[arg(long)]
    pub templates: Option<String>,
    #[arg(long, alias = "batch_size_test", default_value_t = 64, value_parser = at_least_one::<usize>)]
    pub batch_size_test: usize,
    /// Decode threads (default: all cores).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub workers: Option<usize>,
    /// Result JSON. With several datasets, one file per dataset: FILE-<name>.json, or
    /// CLIP_benchmark's template ({dataset}_{model}.json; also {pretrained},
    /// {pretrained_full_path}, {task}, {language}).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Per-image predictions CSV (named per dataset as --output).
    #[arg(long)]
    pub save_predictions: Option<PathBuf>,
    /// Write each dataset's classifier (the class vectors, [embed_dim, classes]; named per
    /// dataset as --output): `.pt`/`.pth` as CLIP_benchmark's --save_clf (`torch.save`), else
    /// safetensors.
    #[arg(long, alias = "save_clf")]
    pub save_clf: Option<PathBuf>,
    /// Classifier files (--save-clf's, or CLIP_benchmark's --save_clf ones) averaged and used in
    /// place of encoding the prompts (CLIP_benchmark's --load_clfs).
    #[arg(long, alias = "load_clfs", num_args = 1..)]
    pub load_clfs: Vec<PathBuf>,
    /// Write the class names into the result JSON (CLIP_benchmark's --dump_classnames).
    #[arg(long, alias = "dump_classnames")]
    pub dump_classnames: bool,
    /// Write the templates (or each class's prompts) into the result JSON
    /// (CLIP_benchmark's --dump_templates).
    #[arg(long, alias = "dump_templates")]
    pub dump_templates: bool,
    /// Skip the run (with several datasets: each dataset) whose --output file exists already
    /// (CLIP_benchmark's --skip_existing).
    #[arg(long)]
    pub skip_existing: bool,
    /// CLIP_benchmark's --distributed: the (checkpoint, dataset[, language]) runs are shuffled
    /// as it shuffles them (Python's random, seed 0; linear-probe: --seed) and this process
    /// takes every N-th from the I-th, I/N from the launcher's RANK/WORLD_SIZE,
    /// SLURM_PROCID/SLURM_NTASKS or MPI's (`eval`: also --shard I/N). Each run writes its own
    /// --output.
    #[arg(long)]
    pub distributed: bool,
    /// Where class vectors are cached (default: the user's cache directory).
    #[arg(long, conflicts_with = "no_text_cache")]
    pub text_cache: Option<PathBuf>,
    /// Do not read or write the class-vector cache.
    #[arg(long)]
    pub no_text_cache: bool,
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Skip images that cannot be decoded (listed under `skipped` in the JSON).
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Continue an interrupted run from its progress file.
    #[arg(long)]
    pub resume: bool,
    /// Evaluate shard I of N (0-based), e.g. 1/4. Also read from RANK/WORLD_SIZE or Slurm.
    #[arg(long)]
    pub shard: Option<ShardSpec>,
    /// Directory for shard partial results.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// With sharding: rank 0 waits for every partial and writes the merged result.
    #[arg(long)]
    pub merge: bool,
    /// Seconds rank 0 waits for the other partials with --merge.
    #[arg(long, default_value_t = 3600)]
    pub merge_timeout: u64,
    /// Prompts per text-encoder batch.
    #[arg(long, default_value_t = 128, value_parser = at_least_one::<usize>)]
    pub text_batch_size: usize,
    /// With a reduced precision: keep every decision as computed, without scoring the
    /// near-tied ones again in fp32.
    #[arg(long)]
    pub no_recheck: bool,
}

/// The layout of a `retrieval --captions` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptionFormat {
    /// By content and extension: Crossmodal-3600 lines (image/key): xm3600; a JSON object
    /// with image_paths: image-paths; .jsonl: jsonl; .txt/.csv: flickr; a JSON object with
    /// annotations: coco; with images only: karpathy.
    Auto,
    /// One JSON object per line: {"image": PATH, "captions": [TEXT, ...]} or "caption": TEXT
    /// (or one JSON list of them, LAVIS/BLIP's annotation files).
    Jsonl,
    /// The Karpathy-split text file: a header, then NAME.jpg,CAPTION lines.
    Flickr,
    /// A COCO captions annotation JSON (images + annotations).
    Coco,
    /// Karpathy's split JSON (dataset_coco.json, dataset_flickr30k.json): the images of
    /// --split, filepath/filename, each sentence's raw text.
    Karpathy,
    /// Webdataset shards (CLIP_benchmark's layout DIR, a .tar, or DIR/{0..N}.tar): an image
    /// and `txt` (one caption per line) per sample.
    Wds,
    /// CLIP_benchmark's annotation file of its multilingual sets (crossmodal3600_captions-en.json,
    /// xtd10-en.json, flickr30k_200-eng_Latn.json, multilingual_mscoco_captions-en.json):
    /// image_paths[i] with annotations[i].
    ImagePaths,
    /// Crossmodal-3600's captions.jsonl: the first caption in --language of each image, images
    /// in images/ beside it.
    Xm3600,
    /// open_clip's training CSV (its --val-data): a header, then one image and caption per row
    /// (--csv-img-key, --csv-caption-key; tab-separated by default, --csv-separator).
    Csv,
}

/// A captioned image set, as `retrieval` and `captioning` read it.
#[derive(Debug, Args)]
pub struct CaptionSetArgs {
    /// The captioned image set: a captions file, webdataset shards (see --format), or
    /// CLIP_benchmark's dataset root of a retrieval set (its annotation file for --split and
    /// --language is read).
    #[arg(long)]
    pub captions: PathBuf,
    /// Where the image paths in --captions are relative to (default: its folder).
    #[arg(long)]
    pub images_root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = CaptionFormat::Auto)]
    pub format: CaptionFormat,
    /// Which split: of a Karpathy JSON (test, val, train, restval), a webdataset layout (its
    /// DIR/SPLIT folder) or a CLIP_benchmark dataset root (its *_SPLIT_karpathy file).
    /// Default test.
    #[arg(long)]
    pub split: Option<String>,
    /// The captions' language: Crossmodal-3600's captions.jsonl holds 36, a CLIP_benchmark
    /// dataset root a file per language (default en).
    #[arg(long)]
    pub language: Option<String>,
    /// The dataset's name in the summary line and JSON (default: the captions file's name;
    /// CLIP_benchmark's name for its sets). In a CLIP_benchmark dataset root holding several
    /// sets, CLIP_benchmark's name (flickr30k, mscoco_captions, crossmodal3600, ...) picks one.
    #[arg(long)]
    pub dataset: Option<String>,
}

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub set: CaptionSetArgs,
    /// open_clip's --csv-separator for a CSV file (one character, or \t; default: a tab when
    /// the header has one, else a comma).
    #[arg(long, value_parser = csv_separator)]
    pub csv_separator: Option<u8>,
    /// open_clip's --csv-img-key: the CSV column of image paths (default filepath).
    #[arg(long)]
    pub csv_img_key: Option<String>,
    /// open_clip's --csv-caption-key: the CSV column of captions (default title).
    #[arg(long)]
    pub csv_caption_key: Option<String>,
    #[arg(long, num_args = 1.., default_values_t = [1usize, 5, 10], value_parser = at_least_one::<usize>)]
    pub recall_k: Vec<usize>,
    /// images: CLIP_benchmark's protocol (an image's captions are all right for it); rows:
    /// open_clip's validation metrics (each (image, caption) pair of the file is one sample,
    /// right only for itself, with its clip_val_loss).
    #[arg(long, value_enum, default_value_t = Pairing::Images)]
    pub pairing: Pairing,
    /// open_clip's --workers, with --pairing rows over several webdataset shards: each worker
    /// batches its own shards (shard s goes to worker s % N), so the rows' order and the loss
    /// batches follow N (default 4, open_clip's; 0 reads all shards in one stream, as 1 does).
    #[arg(long)]
    pub loader_workers: Option<usize>,
    /// Images per image-encoder batch; with --pairing rows also the rows per loss batch
    /// (open_clip's --batch-size).
    #[arg(long, alias = "batch_size_test", default_value_t = 64, value_parser = at_least_one::<usize>)]
    pub batch_size_test: usize,
    /// Captions per text-encoder batch.
    #[arg(long, default_value_t = 128, value_parser = at_least_one::<usize>)]
    pub text_batch_size: usize,
    /// Decode threads (default: all cores).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub workers: Option<usize>,
    /// Result JSON; CLIP_benchmark's placeholders ({dataset}, {model}, {pretrained},
    /// {pretrained_full_path}, {task}, {language}) are filled.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// One row per query with the rank of its first correct item (placeholders as --output).
    #[arg(long)]
    pub save_ranks: Option<PathBuf>,
    /// Skip the run (with several datasets: each dataset) whose --output file exists already
    /// (CLIP_benchmark's --skip_existing).
    #[arg(long)]
    pub skip_existing: bool,
    /// CLIP_benchmark's --distributed: the (checkpoint, dataset[, language]) runs are shuffled
    /// as it shuffles them (Python's random, seed 0; linear-probe: --seed) and this process
    /// takes every N-th from the I-th, I/N from the launcher's RANK/WORLD_SIZE,
    /// SLURM_PROCID/SLURM_NTASKS or MPI's (`eval`: also --shard I/N). Each run writes its own
    /// --output.
    #[arg(long)]
    pub distributed: bool,
    /// Leave out images that are missing, unreadable or without captions (listed in the JSON).
    #[arg(long)]
    pub skip_unreadable: bool,
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CaptioningArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    // Each image's captions are its references.
    #[command(flatten)]
    pub set: CaptionSetArgs,
    /// open_clip's `generate(num_beams=)`.
    #[arg(long, default_value_t = 6)]
    pub num_beams: usize,
    /// open_clip's `generate(num_beam_groups=)`: must divide --num-beams.
    #[arg(long, default_value_t = 3)]
    pub num_beam_groups: usize,
    /// open_clip's `generate(seq_len=)`: the longest caption in ids, the start token included.
    #[arg(long, default_value_t = 30)]
    pub seq_len: usize,
    /// open_clip's `generate(min_seq_len=)`: no end token before this many ids.
    #[arg(long, default_value_t = 5)]
    pub min_seq_len: usize,
    /// Images per batch (CLIP_benchmark's --batch_size; no result depends on it).
    #[arg(long, alias = "batch_size_test", default_value_t = 64, value_parser = at_least_one::<usize>)]
    pub batch_size_test: usize,
    /// Decode threads (default: all cores).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub workers: Option<usize>,
    /// Result JSON (CLIP_benchmark's placeholders are filled, as for `retrieval`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Each image's generated caption and references, one JSON object per line (placeholders
    /// as --output).
    #[arg(long)]
    pub save_captions: Option<PathBuf>,
    /// Skip the run whose --output file exists already (CLIP_benchmark's --skip_existing).
    #[arg(long)]
    pub skip_existing: bool,
    /// Leave out images that are missing or unreadable (listed in the JSON).
    #[arg(long)]
    pub skip_unreadable: bool,
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// What a retrieval query counts as right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pairing {
    /// Every caption of the query's image (CLIP_benchmark).
    Images,
    /// The query's own row only (open_clip's validation of a CSV).
    Rows,
}

/// The layout of a `caption-selection --captions` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SelectionFormat {
    /// By content: an Arrow file (Hugging Face datasets' cache) is Winoground's; a whole-file
    /// object with negative_caption entries is SugarCREPE's; lines with image_0 are
    /// Winoground's; else jsonl.
    Auto,
    /// SugarCREPE's {ID: {"filename", "caption", "negative_caption"}} (one image; the true
    /// caption, then the false one).
    SugarCrepe,
    /// Winoground's examples.jsonl: image_0, image_1, caption_0, caption_1 per line; images
    /// NAME, NAME.png or images/NAME.png under --images-root, or in images.zip there. Or its
    /// Hugging Face datasets cache (.arrow).
    Winoground,
    /// One {"images": [PATH, ...], "captions": [TEXT, ...]} per line (or "image": PATH), image
    /// i belonging with caption i; or one JSON list of them.
    Jsonl,
}

#[derive(Debug, Args)]
pub struct SelectionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The instances: SugarCREPE's TASK.json (or CLIP_benchmark's sugar_crepe folder: every
    /// task in it), Winoground's examples.jsonl (or the folder holding it, images.zip read in
    /// place), Winoground in Hugging Face datasets' cache (CLIP_benchmark's cache_dir, or a
    /// winoground-test.arrow) or JSON lines (see --format). Several sets share one model load,
    /// and each image is encoded once.
    #[arg(long, num_args = 1.., required = true)]
    pub captions: Vec<PathBuf>,
    /// Where the image names are relative to (default: the file's folder; for SugarCREPE its
    /// val2017/ when there is one).
    #[arg(long)]
    pub images_root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SelectionFormat::Auto)]
    pub format: SelectionFormat,
    /// The dataset's name in the summary line and JSON (default: from the file's name, e.g.
    /// sugar_crepe/swap_att, winoground); one set only.
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long, alias = "batch_size_test", default_value_t = 64, value_parser = at_least_one::<usize>)]
    pub batch_size_test: usize,
    /// Captions per text-encoder batch.
    #[arg(long, default_value_t = 128, value_parser = at_least_one::<usize>)]
    pub text_batch_size: usize,
    /// Decode threads (default: all cores).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub workers: Option<usize>,
    /// Result JSON (with several sets, one per set: FILE-<name>.json, or CLIP_benchmark's
    /// template, {dataset}_{model}.json; also {pretrained}, {pretrained_full_path}, {task},
    /// {language}).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// One row per instance: its id, the choices, whether they are right, the scores (with
    /// several sets, named per set as --output).
    #[arg(long)]
    pub save_predictions: Option<PathBuf>,
    /// Skip the run (with several datasets: each dataset) whose --output file exists already
    /// (CLIP_benchmark's --skip_existing).
    #[arg(long)]
    pub skip_existing: bool,
    /// CLIP_benchmark's --distributed: the (checkpoint, dataset[, language]) runs are shuffled
    /// as it shuffles them (Python's random, seed 0; linear-probe: --seed) and this process
    /// takes every N-th from the I-th, I/N from the launcher's RANK/WORLD_SIZE,
    /// SLURM_PROCID/SLURM_NTASKS or MPI's (`eval`: also --shard I/N). Each run writes its own
    /// --output.
    #[arg(long)]
    pub distributed: bool,
    /// Leave out instances with a missing or unreadable image (listed in the JSON).
    #[arg(long)]
    pub skip_unreadable: bool,
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LinearProbeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training images: an ImageFolder (class folders), a CLIP_benchmark webdataset directory
    /// (its train/ split; classes from its classnames.txt) or shards (`DIR/{0..9}.tar`).
    #[arg(long)]
    pub train: PathBuf,
    /// Test images in the training set's classes: an ImageFolder (some or all of its class
    /// folders), a webdataset directory (its test/ split) or shards. Default: --train's test/
    /// split when --train is a webdataset directory.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Validation images for --c-search (an ImageFolder, a webdataset directory's val/ split, or
    /// shards).
    #[arg(long, conflicts_with = "val_fraction")]
    pub val: Option<PathBuf>,
    /// For --c-search without --val: this share of each training class, held out (default 0.2).
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// A VTAB task or TFDS dataset (CLIP_benchmark's `vtab/NAME`, `tfds/NAME`): --train (and
    /// --test, --val; default the same) is then the TFDS data_dir, and the splits are VTAB's
    /// (or TFDS split strings), named by --train-split, --test-split and --val-split.
    #[arg(long, value_name = "vtab/NAME|tfds/NAME")]
    pub dataset: Option<String>,
    /// With --dataset: the VTAB split to train on (CLIP_benchmark's --train_split).
    #[arg(long, default_value = "train", requires = "dataset")]
    pub train_split: String,
    /// With --dataset: the VTAB split to score.
    #[arg(long, default_value = "test", requires = "dataset")]
    pub test_split: String,
    /// With --dataset and --c-search: the VTAB split C is chosen on (CLIP_benchmark's
    /// --val_split; `val`).
    #[arg(long, requires = "dataset", conflicts_with = "val_fraction")]
    pub val_split: Option<String>,
    /// Few-shot: train on K images per class of --train (all of a class with fewer), picked
    /// by a shuffle seeded with --seed (--fit adamw: CLIP_benchmark's pick, every class needs K).
    /// (-1, CLIP_benchmark's default, means every image.)
    #[arg(long, value_name = "K", allow_negative_numbers = true, value_parser = parse_fewshot_k)]
    pub fewshot_k: Option<FewshotK>,
    /// The few-shot pick's seed; with --fit adamw also the training order, the layer's initial
    /// weights and the shuffles (torch's generator, as CLIP_benchmark's --seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `lbfgs`: the CLIP paper's logistic regression (scikit-learn's L-BFGS); `adamw`:
    /// CLIP_benchmark's linear layer trained with AdamW on L2-normalised features.
    #[arg(long, value_enum, default_value = "lbfgs")]
    pub fit: ProbeFit,
    /// --fit adamw: the learning rate (CLIP_benchmark's --fewshot_lr).
    #[arg(long, alias = "fewshot_lr", default_value_t = 0.1)]
    pub lr: f64,
    /// --fit adamw: passes over the training set (CLIP_benchmark's --fewshot_epochs).
    #[arg(long, alias = "fewshot_epochs", default_value_t = 10, value_parser = at_least_one::<usize>)]
    pub epochs: usize,
    /// --fit adamw: the training batch (CLIP_benchmark's --batch_size).
    #[arg(long, alias = "fit_batch_size", default_value_t = 64, value_parser = at_least_one::<usize>)]
    pub fit_batch_size: usize,
    /// --fit adamw without a validation set: the weight decay (default 0, CLIP_benchmark's).
    #[arg(long, alias = "weight_decay")]
    pub weight_decay: Option<f64>,
    /// The inverse penalty strength, scikit-learn's C (default 0.316, the CLIP example's).
    #[arg(long, conflicts_with = "c_search")]
    pub c: Option<f64>,
    /// Pick C on the validation split (1e-6..1e6, refined), then refit on train + validation.
    #[arg(long)]
    pub c_search: bool,
    /// L2-normalise the features first (default: raw, as the CLIP linear-probe example).
    #[arg(long)]
    pub normalize: bool,
    #[arg(long, default_value_t = 1000, value_parser = at_least_one::<u64>)]
    pub max_iter: u64,
    /// Where image features are cached (default: the user's cache directory).
    #[arg(long, conflicts_with = "no_feature_cache")]
    pub feature_cache: Option<PathBuf>,
    /// Do not read or write the feature cache.
    #[arg(long)]
    pub no_feature_cache: bool,
    #[arg(long, alias = "batch_size_test", default_value_t = 64, value_parser = at_least_one::<usize>)]
    pub batch_size_test: usize,
    /// Decode threads (default: all cores).
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub workers: Option<usize>,
    /// Result JSON; CLIP_benchmark's placeholders ({dataset}, {model}, {pretrained},
    /// {pretrained_full_path}, {task}, {language}) are filled.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Per test image: path,label,pred1 (the eval CSV's columns; placeholders as --output).
    #[arg(long)]
    pub save_predictions: Option<PathBuf>,
    /// Skip the run (with several datasets: each dataset) whose --output file exists already
    /// (CLIP_benchmark's --skip_existing).
    #[arg(long)]
    pub skip_existing: bool,
    /// CLIP_benchmark's --distributed: the (checkpoint, dataset[, language]) runs are shuffled
    /// as it shuffles them (Python's random, seed 0; linear-probe: --seed) and this process
    /// takes every N-th from the I-th, I/N from the launcher's RANK/WORLD_SIZE,
    /// SLURM_PROCID/SLURM_NTASKS or MPI's (`eval`: also --shard I/N). Each run writes its own
    /// --output.
    #[arg(long)]
    pub distributed: bool,
    /// Skip images that cannot be decoded (listed in the JSON).
    #[arg(long)]
    pub skip_unreadable: bool,
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl LinearProbeArgs {
    /// `--fewshot-k`'s count per class; None: every training image.
    pub fn fewshot(&self) -> Option<usize> {
        match self.fewshot_k {
            Some(FewshotK::PerClass(k)) => Some(k),
            Some(FewshotK::All) | None => None,
        }
    }
}

/// `--fewshot-k`: K images per class, or every image (CLIP_benchmark's -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FewshotK {
    All,
    PerClass(usize),
}

/// Counts (batch sizes, workers, threads, epochs, recall@K, ...): clap refuses 0 with the
/// flag's name and exit 2, before anything is loaded.
fn at_least_one<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + Default + PartialEq,
    T::Err: std::fmt::Display,
{
    match s.parse::<T>() {
        Ok(n) if n == T::default() => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A context length: the start and end tokens need two positions.
fn context_length(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n < 2 => Err("must be at least 2 (the start and end tokens)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `retrieval --csv-separator`: one ASCII character, or `\t` as open_clip's users type it.
fn csv_separator(s: &str) -> Result<u8, String> {
    match s {
        "\\t" | "\t" | "tab" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && s != "\"" && s != "\n" && s != "\r" => {
            Ok(s.as_bytes()[0])
        }
        _ => Err("expected one character such as , or ; (or \\t for a tab)".into()),
    }
}

/// `bench --seconds`: a finite positive time.
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err("must be a positive number of seconds".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_fewshot_k(s: &str) -> Result<FewshotK, String> {
    match s.parse::<i64>() {
        Ok(-1) => Ok(FewshotK::All),
        Ok(k) if k > 0 => Ok(FewshotK::PerClass(k as usize)),
        _ => Err(format!("`{s}`: a positive count, or -1 for every image")),
    }
}

/// `linear-probe --fit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeFit {
    Lbfgs,
    Adamw,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// A file with one image path per line.
    #[arg(long)]
    pub image_list: Option<PathBuf>,
    /// A file with one text per line.
    #[arg(long)]
    pub texts_file: Option<PathBuf>,
    #[arg(long = "text", num_args = 1..)]
    pub texts: Vec<String>,
    #[arg(long)]
    pub out: PathBuf,
    /// Features before L2 normalisation.
    #[arg(long)]
    pub raw: bool,
    #[arg(long, default_value_t = 32, value_parser = at_least_one::<usize>)]
    pub batch_size: usize,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long = "image", num_args = 1.., required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long = "text", num_args = 1.., required = true)]
    pub texts: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    pub texts: Vec<String>,
    /// One input per line: a JSON string or an object with a "text" field.
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    #[arg(long, default_value_t = 77, value_parser = context_length)]
    pub context_length: usize,
    /// Refuse texts longer than the context instead of cutting them.
    #[arg(long)]
    pub no_truncate: bool,
    /// A HuggingFace tokenizer (tokenizer.json or its folder; SigLIP's, XLM-RoBERTa's, BERT's) instead
    /// of CLIP's: rows as open_clip's HFTokenizer gives them.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// open_clip's cleaning before the --tokenizer (its `tokenizer_kwargs.clean`).
    #[arg(
        long,
        value_enum,
        default_value = "canonicalize",
        requires = "tokenizer"
    )]
    pub clean: crate::models::config::TextClean,
    /// Write the --tokenizer's separator id as 0 (open_clip's `strip_sep_token`: CLIPA's
    /// `bert-base-uncased`).
    #[arg(long, requires = "tokenizer")]
    pub strip_sep_token: bool,
}

#[derive(Debug, Args)]
pub struct PreprocessArgs {
    #[arg(long, default_value_t = 224, value_parser = at_least_one::<usize>)]
    pub resolution: usize,
    /// open_clip's `resize_mode`: `shortest` (resize the shorter side, centre crop; the
    /// reference's) or `squash` (both sides to the resolution, nothing cropped; DFN's).
    #[arg(long, alias = "resize_mode", value_enum, default_value = "shortest")]
    pub resize_mode: crate::preprocess::ResizeMode,
    /// open_clip's `interpolation`: `bicubic` (the reference's) or `bilinear` (open_clip's CLIPA
    /// and PE tags), as PIL resizes.
    #[arg(long, value_enum, default_value = "bicubic")]
    pub interpolation: crate::preprocess::Interpolation,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub workers: Option<usize>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Check the checkpoint against this architecture (open_clip's `NAME-quickgelu` too).
    #[arg(long, alias = "visual_model")]
    pub visual_model: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// How floating-point tensors are stored in a written checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreDType {
    F32,
    F16,
    Bf16,
}

impl StoreDType {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            StoreDType::F32 => candle_core::DType::F32,
            StoreDType::F16 => candle_core::DType::F16,
            StoreDType::Bf16 => candle_core::DType::BF16,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            StoreDType::F32 => "f32",
            StoreDType::F16 => "f16",
            StoreDType::Bf16 => "bf16",
        }
    }
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input checkpoint.
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = StoreDType::F32)]
    pub dtype: StoreDType,
    #[arg(long)]
    pub visual_model: Option<String>,
    #[arg(long)]
    pub model_config: Option<PathBuf>,
}

/// What `bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchWhat {
    /// The image encoder on random pixels.
    Image,
    /// The text encoder on ImageNet prompts.
    Text,
    /// The transformer's matrix products: the native gemm against candle's CPU matmul (in
    /// bf16 with --precision bf16).
    Gemm,
    /// The tokenizer over the 80,000 ImageNet prompts.
    Tokenize,
    /// Decode + preprocess on one core.
    Preprocess,
    /// Decode, preprocess and the image encoder end to end, against the encoder alone.
    Eval,
    /// Finds the fp32 products' fastest cache blocking on this CPU (ViT-B-32's and RN50's
    /// image encoders and the text encoder, or --visual-model's two) and stores it for later
    /// runs (a speed setting only: no result depends on it).
    Blocking,
}

impl BenchWhat {
    pub fn name(self) -> &'static str {
        match self {
            BenchWhat::Image => "image",
            BenchWhat::Text => "text",
            BenchWhat::Gemm => "gemm",
            BenchWhat::Tokenize => "tokenize",
            BenchWhat::Preprocess => "preprocess",
            BenchWhat::Eval => "eval",
            BenchWhat::Blocking => "blocking",
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The architecture (default: what --checkpoint holds, else ViT-B-32).
    #[arg(long)]
    pub visual_model: Option<String>,
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Use these weights instead of random ones.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = BenchWhat::Image)]
    pub what: BenchWhat,
    #[arg(long, default_value_t = 16, value_parser = at_least_one::<usize>)]
    pub batch_size: usize,
    /// Minimum measuring time per item.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub seconds: f64,
    #[arg(long, value_parser = at_least_one::<usize>)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Images for --what preprocess/eval (default: synthetic 500x375 JPEGs).
    #[arg(long, num_args = 1..)]
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    #[arg(required = true)]
    pub partials: Vec<PathBuf>,
    /// Result JSON; CLIP_benchmark's placeholders ({dataset}, {model}, {pretrained}, ...) are
    /// filled from the partials.
    #[arg(long)]
    pub output: PathBuf,
    /// Per-image predictions CSV (placeholders as --output).
    #[arg(long)]
    pub save_predictions: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also write the table as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}
