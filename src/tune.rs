//! The fp32 products' cache blocking tuned on the CPU at hand. `bench --what blocking` times
//! the encoders under candidate blockings, each against the family's default in the same
//! minutes, and stores the fastest for this CPU model; later runs read it at the edge. The
//! blocking is a speed setting only (every output is one FMA chain over the whole depth,
//! `native::gemm::Blocking`), so a stored choice changes no result, only how fast it comes.

use crate::engine::{Engine, Model};
use crate::models::Config;
use crate::native::gemm::{Blocking, Isa};
use crate::native::NativeOptions;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Below this speed-up over the default a candidate is noise: the default stays.
pub const MIN_GAIN: f64 = 1.02;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a blocking file of pyramidclip ({source})", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::Error),
}

/// One CPU's tuned blocking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// As `native::simd::cpu_model` names it (brand, family, model).
    pub cpu_model: String,
    /// The kernel family the blocking was measured with.
    pub isa: String,
    /// Threads of the measuring run.
    pub threads: usize,
    pub kc: usize,
    pub mc: usize,
    /// Its rate over the default's (geometric mean over the encoders) when it was chosen.
    pub speedup: f64,
    /// The family's default it was measured against.
    pub default_kc: usize,
    pub default_mc: usize,
    /// The pyramidclip version that measured it.
    pub version: String,
}

impl Entry {
    pub fn blocking(&self) -> Blocking {
        Blocking {
            kc: self.kc.max(1),
            mc: self.mc.max(1),
        }
    }
}

/// The file: one entry per CPU model, kernel family and thread count.
#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    format: String,
    entries: Vec<Entry>,
}

const FORMAT: &str = "pyramidclip-gemm-blocking/1";

fn read(path: &Path) -> Result<Option<File>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.into(),
                source,
            })
        }
    };
    let f: File = serde_json::from_slice(&bytes).map_err(|source| Error::Parse {
        path: path.into(),
        source,
    })?;
    if f.format != FORMAT {
        return Err(Error::Parse {
            path: path.into(),
            source: serde::de::Error::custom(format!("format {:?}, not {FORMAT:?}", f.format)),
        });
    }
    Ok(Some(f))
}

/// The entry stored for this CPU and kernel family measured with the nearest thread count to
/// `threads` (a missing file is `None`).
pub fn lookup(
    path: &Path,
    cpu_model: &str,
    isa: Isa,
    threads: usize,
) -> Result<Option<Entry>, Error> {
    let Some(f) = read(path)? else {
        return Ok(None);
    };
    let mine: Vec<Entry> = f
        .entries
        .into_iter()
        .filter(|e| e.cpu_model == cpu_model && e.isa == isa.name() && e.kc > 0 && e.mc > 0)
        .collect();
    // Threads share caches on some machines: the nearest thread count (the fewer on a tie).
    Ok(mine
        .into_iter()
        .min_by_key(|e| (e.threads.abs_diff(threads), e.threads)))
}

/// Stores `entry`, replacing the one of the same CPU, family and threads (other CPUs' entries
/// stay: a home directory may be shared between machines). Written atomically.
pub fn store(path: &Path, entry: &Entry) -> Result<(), Error> {
    // An unreadable file is replaced rather than blocking the tuning it would record.
    let mut f = read(path).ok().flatten().unwrap_or_default();
    f.format = FORMAT.into();
    f.entries.retain(|e| {
        !(e.cpu_model == entry.cpu_model && e.isa == entry.isa && e.threads == entry.threads)
    });
    f.entries.push(entry.clone());
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_vec_pretty(&f).expect("plain data serialises");
    crate::util::write_atomic(path, &text).map_err(io)
}

/// What an encoder is timed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Image,
    Text,
}

/// One encoder of one architecture, on random weights.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub config: Config,
    pub work: Work,
}

#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Images or prompts per batch.
    pub batch: usize,
    /// Seconds of one measuring window.
    pub window: f64,
    /// Batches of one measuring window, at least.
    pub batches: usize,
    /// Default/candidate pairs per candidate and encoder (alternating ABBA).
    pub rounds: usize,
    /// The engine's other settings (fp32 products; the blocking is replaced).
    pub native: NativeOptions,
    /// Depths per pass tried with the default rows, then rows tried with the best depth.
    pub kc: Vec<usize>,
    pub mc: Vec<usize>,
}

impl SweepOptions {
    /// Candidates around the family's default: depths whose 32-column weight panel fills a
    /// 32 or 48 KB L1 (256, 384) up to one pass over most products (1536), rows from 8 to 32
    /// register tiles. On Zen 4 (2 threads, batch 16) a wider sweep (kc 192-3072, mc 112-448)
    /// found nothing within 2% of the default outside this set (docs/PERFORMANCE.md).
    pub fn around(native: NativeOptions, batch: usize, window: f64) -> Self {
        let mr = native.gemm.isa.mr();
        Self {
            batch,
            window,
            batches: 3,
            rounds: 2,
            native,
            kc: vec![256, 384, 512, 768, 1024, 1536],
            mc: [8, 16, 24, 32].iter().map(|t| t * mr).collect(),
        }
    }

    /// Batches this sweep runs per encoder when no candidate needs measuring again (the
    /// confirmation adds up to a quarter), for a time estimate.
    pub fn expected_batches(&self) -> usize {
        // The default's depth and rows are in the lists, and each is tried once.
        let candidates = (self.kc.len() + self.mc.len()).saturating_sub(2);
        (2 * self.rounds.max(1) * self.batches.max(1) + 1) * candidates
    }
}

/// A candidate's rate over the default's, per workload (median of its rounds) and overall
/// (geometric mean).
#[derive(Debug, Clone)]
pub struct Score {
    pub blocking: Blocking,
    pub ratios: Vec<f64>,
    pub speedup: f64,
}

#[derive(Debug, Clone)]
pub struct Sweep {
    pub default: Blocking,
    pub scores: Vec<Score>,
    /// The fastest candidate, confirmed against the default in a second measurement, or the
    /// default where none gained [`MIN_GAIN`].
    pub chosen: Blocking,
    /// The chosen blocking's confirmed speed-up (1 for the default).
    pub speedup: f64,
}

/// An architecture's random weights (generated once, shared by every candidate model) and its
/// model with the default blocking; its encoders share both.
struct Arch {
    config: Config,
    vb: candle_nn::VarBuilder<'static>,
    base: Model,
}

impl Arch {
    fn new(config: &Config, native: NativeOptions) -> Result<Self, Error> {
        let vb = crate::synth::random_weights(1, DType::F32, &Device::Cpu);
        let base = Model::new(config, vb.clone(), Engine::Native, native)?;
        Ok(Self {
            config: config.clone(),
            vb,
            base,
        })
    }

    fn build(&self, native: NativeOptions) -> candle_core::Result<Model> {
        Model::new(&self.config, self.vb.clone(), Engine::Native, native)
    }
}

/// An encoder ready to time: its architecture (an index into the sweep's) and its input.
struct Bench {
    arch: usize,
    work: Work,
    input: Tensor,
    /// Seconds of the warm-up batch (for the time estimate).
    first: f64,
}

impl Bench {
    fn new(load: &Workload, arch: usize, base: &Model, batch: usize) -> Result<Self, Error> {
        let cfg = &load.config;
        let input = match load.work {
            Work::Image => {
                let n = cfg.image_resolution;
                Tensor::randn(0f32, 1.0, (batch, 3, n, n), &Device::Cpu)?
            }
            Work::Text => {
                // ImageNet prompts, as the class vectors are computed.
                let names = crate::data::lines(crate::data::labels::files::IMAGENET_CLASSNAMES);
                let templates = crate::data::labels::imagenet_templates();
                let ctx = cfg.context_length;
                let mut ids = Vec::with_capacity(batch * ctx);
                for (c, t) in names.iter().zip(templates.iter().cycle()).take(batch) {
                    let p = crate::data::fill(t, c);
                    ids.extend(crate::tokenizer::Tokenizer::global().tokenize(&p, ctx, true)?);
                }
                if cfg.family.pools_last() {
                    // Every position is computed whatever the ids: CLIP's, folded into the
                    // vocabulary, cost what SigLIP's or CLIPA's own would.
                    let vocab = cfg.vocab_size.max(1) as i64;
                    ids.iter_mut().for_each(|t| *t %= vocab);
                }
                if let Some(h) = &cfg.hf_text {
                    crate::models::hf_text::fold_clip_ids(&mut ids, cfg.vocab_size, h.pad_id);
                }
                let rows = ids.len() / ctx;
                Tensor::from_vec(ids, (rows, ctx), &Device::Cpu)?
            }
        };
        let mut b = Self {
            arch,
            work: load.work,
            input,
            first: 0.0,
        };
        // Warm-up: first-touch page faults, the thread pool's start.
        let t = Instant::now();
        b.run(base)?;
        b.first = t.elapsed().as_secs_f64();
        Ok(b)
    }

    fn run(&self, m: &Model) -> candle_core::Result<()> {
        let f = match self.work {
            Work::Image => m.encode_image(&self.input)?,
            Work::Text => m.encode_text(&self.input)?,
        };
        std::hint::black_box(f.to_vec2::<f32>()?);
        Ok(())
    }

    /// Batches per second of the fastest batch in a window of at least `window` seconds and
    /// `batches` batches. The fastest, not the mean: on a shared machine the neighbours only
    /// ever slow a batch down, so the fastest is the blocking's own speed.
    fn rate(&self, m: &Model, window: f64, batches: usize) -> candle_core::Result<f64> {
        let t = Instant::now();
        let mut n = 0usize;
        let mut best = f64::INFINITY;
        while n < batches.max(1) || t.elapsed().as_secs_f64() < window {
            let one = Instant::now();
            self.run(m)?;
            best = best.min(one.elapsed().as_secs_f64());
            n += 1;
        }
        Ok(1.0 / best)
    }

    /// The candidate's rate over the default's (`base`): the median of `rounds` pairs,
    /// alternating which runs first (ABBA), so a VM's slow minutes fall on both.
    fn ratio(
        &self,
        base: &Model,
        cand: &Model,
        o: &SweepOptions,
        rounds: usize,
    ) -> candle_core::Result<f64> {
        self.run(cand)?;
        let (window, n) = (o.window, o.batches);
        let mut r = Vec::with_capacity(rounds);
        for i in 0..rounds.max(1) {
            let (a, b) = if i % 2 == 0 {
                let a = self.rate(base, window, n)?;
                (a, self.rate(cand, window, n)?)
            } else {
                let b = self.rate(cand, window, n)?;
                (self.rate(base, window, n)?, b)
            };
            r.push(b / a);
        }
        Ok(median(&mut r))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len().max(1) as f64).exp()
}

fn with_blocking(native: NativeOptions, b: Blocking) -> NativeOptions {
    let mut n = native.with_bf16(false);
    n.gemm.blocking = b;
    n
}

fn score(
    archs: &[Arch],
    benches: &[Bench],
    opts: &SweepOptions,
    b: Blocking,
    rounds: usize,
) -> Result<Score, Error> {
    let mut ratios = vec![0.0; benches.len()];
    for (i, arch) in archs.iter().enumerate() {
        // One candidate model per architecture, for each of its encoders.
        let cand = arch.build(with_blocking(opts.native, b))?;
        for (j, w) in benches.iter().enumerate().filter(|(_, w)| w.arch == i) {
            ratios[j] = w.ratio(&arch.base, &cand, opts, rounds)?;
        }
    }
    let speedup = geomean(&ratios);
    Ok(Score {
        blocking: b,
        ratios,
        speedup,
    })
}

/// What [`sweep`] reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// The encoders are built; the sweep will take about this many seconds.
    Ready { seconds: f64 },
    /// A candidate measured.
    Scored(&'a Score),
    /// The fastest candidate measured again.
    Confirmed(&'a Score),
}

/// Times `loads` under the default blocking of `opts.native`'s kernel family and under the
/// candidates: each depth of `opts.kc` with the default rows, then each row count of
/// `opts.mc` with the best depth so far. The fastest is measured again against the default
/// (twice the rounds) and chosen only if it still gains [`MIN_GAIN`]: with a dozen
/// candidates, the best of one noisy measurement is biased upwards. `progress` sees every
/// score as it comes.
pub fn sweep(
    loads: &[Workload],
    opts: &SweepOptions,
    mut progress: impl FnMut(Event),
) -> Result<Sweep, Error> {
    let default = Blocking::default_for(opts.native.gemm.isa, rayon::current_num_threads());
    let base = with_blocking(opts.native, default);
    let mut archs: Vec<Arch> = Vec::new();
    let mut benches = Vec::with_capacity(loads.len());
    for l in loads {
        let i = match archs.iter().position(|a| a.config == l.config) {
            Some(i) => i,
            None => {
                archs.push(Arch::new(&l.config, base)?);
                archs.len() - 1
            }
        };
        benches.push(Bench::new(l, i, &archs[i].base, opts.batch.max(1))?);
    }
    let per_round: f64 = benches.iter().map(|b| b.first).sum();
    progress(Event::Ready {
        seconds: per_round * opts.expected_batches() as f64,
    });
    let mut scores: Vec<Score> = Vec::new();
    let mut best = (default, 1.0);
    let mut try_one =
        |b: Blocking, scores: &mut Vec<Score>, best: &mut (Blocking, f64)| -> Result<(), Error> {
            if b == default || scores.iter().any(|s| s.blocking == b) {
                return Ok(());
            }
            let s = score(&archs, &benches, opts, b, opts.rounds)?;
            progress(Event::Scored(&s));
            if s.speedup > best.1 {
                *best = (b, s.speedup);
            }
            scores.push(s);
            Ok(())
        };
    for &kc in &opts.kc {
        try_one(default.with(Some(kc), None), &mut scores, &mut best)?;
    }
    let depth = best.0.kc;
    for &mc in &opts.mc {
        try_one(default.with(Some(depth), Some(mc)), &mut scores, &mut best)?;
    }
    let (mut chosen, mut speedup) = (default, 1.0);
    if best.1 >= MIN_GAIN {
        let again = score(&archs, &benches, opts, best.0, 2 * opts.rounds.max(1))?;
        progress(Event::Confirmed(&again));
        if again.speedup >= MIN_GAIN {
            (chosen, speedup) = (best.0, again.speedup);
        }
    }
    Ok(Sweep {
        default,
        scores,
        chosen,
        speedup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cpu: &str, threads: usize, kc: usize) -> Entry {
        Entry {
            cpu_model: cpu.into(),
            isa: Isa::Avx512.name().into(),
            threads,
            kc,
            mc: 224,
            speedup: 1.05,
            default_kc: 1024,
            default_mc: 336,
            version: "test".into(),
        }
    }

    #[test]
    fn entries_are_kept_per_cpu_and_threads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/blocking.json");
        assert!(lookup(&p, "cpu A", Isa::Avx512, 2).unwrap().is_none());
        store(&p, &entry("cpu A", 2, 256)).unwrap();
        store(&p, &entry("cpu B", 2, 512)).unwrap();
        store(&p, &entry("cpu A", 4, 384)).unwrap();
        store(&p, &entry("cpu A", 2, 768)).unwrap(); // replaces the first
        let got = |cpu, t| lookup(&p, cpu, Isa::Avx512, t).unwrap().map(|e| e.kc);
        assert_eq!(got("cpu A", 2), Some(768));
        assert_eq!(got("cpu A", 4), Some(384));
        // Another thread count: the nearest measured.
        assert_eq!(got("cpu A", 8), Some(384));
        assert_eq!(got("cpu A", 3), Some(768));
        assert_eq!(got("cpu A", 1), Some(768));
        assert_eq!(got("cpu B", 1), Some(512));
        assert_eq!(got("cpu C", 2), None);
        assert_eq!(lookup(&p, "cpu A", Isa::Avx2, 2).unwrap(), None);
    }

    #[test]
    fn a_foreign_or_broken_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blocking.json");
        for bad in [
            &b"{not json"[..],
            b"[]",
            b"{\"format\":\"x\",\"entries\":[]}",
        ] {
            std::fs::write(&p, bad).unwrap();
            let e = lookup(&p, "cpu", Isa::Avx512, 2).unwrap_err();
            assert!(e.to_string().contains("blocking.json"), "{e}");
        }
        // Storing over it starts a new file.
        store(&p, &entry("cpu", 2, 256)).unwrap();
        assert_eq!(lookup(&p, "cpu", Isa::Avx512, 2).unwrap().unwrap().kc, 256);
    }

    #[test]
    fn the_sweep_scores_each_candidate_once_and_keeps_a_default_without_gain() {
        let yml = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-models.yml");
        let reg = crate::loader::registry(Some(&yml), None).unwrap();
        let cfg = reg.get("tiny-ViT").unwrap().clone();
        // Two encoders of one architecture: one model per candidate serves both.
        let loads = [
            Workload {
                name: "tiny image".into(),
                config: cfg.clone(),
                work: Work::Image,
            },
            Workload {
                name: "tiny text".into(),
                config: cfg,
                work: Work::Text,
            },
        ];
        let native = NativeOptions::default();
        let mut opts = SweepOptions::around(native, 2, 0.0);
        opts.rounds = 1;
        opts.batches = 1;
        let d = Blocking::default_for(native.gemm.isa, rayon::current_num_threads());
        opts.kc = vec![d.kc, 64, 64];
        opts.mc = vec![d.mc, 2 * native.gemm.isa.mr()];
        let mut seen = Vec::new();
        let s = sweep(&loads, &opts, |e| match e {
            Event::Ready { seconds } => assert!(seconds >= 0.0),
            Event::Scored(s) | Event::Confirmed(s) => seen.push(s.blocking),
        })
        .unwrap();
        assert_eq!(s.default, d);
        // The default and repeats are not scored; the confirmation may add one.
        let scored: Vec<Blocking> = s.scores.iter().map(|x| x.blocking).collect();
        assert_eq!(scored.len(), 2, "{scored:?}");
        assert!(scored.contains(&d.with(Some(64), None)), "{scored:?}");
        assert!(seen.len() >= scored.len());
        for x in &s.scores {
            assert_eq!(x.ratios.len(), 2);
            assert!(x.ratios.iter().all(|r| r.is_finite() && *r > 0.0));
            assert!(x.speedup.is_finite() && x.speedup > 0.0);
        }
        if s.chosen == d {
            assert_eq!(s.speedup, 1.0);
        } else {
            assert!(s.speedup >= MIN_GAIN);
        }
    }
}
