//! The bottom of the native engine: which vector instructions the CPU has (detected once, at
//! run time, so one binary runs everywhere), a macro that compiles plain loops for each family,
//! the branch-free `exp` every activation and softmax uses, and the FMA peak probe.

use std::sync::OnceLock;

/// A family of vector instructions the CPU kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Generic,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Generic => "generic",
        }
    }

    /// Whether this CPU runs the family (checked at run time).
    pub fn available(self) -> bool {
        match self {
            Isa::Generic => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest family this CPU runs.
    pub fn detected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|i| i.available())
                .unwrap_or(Isa::Generic)
        })
    }

    /// `self` where the CPU runs it, else the widest family it does run (a narrower request
    /// is honoured, for comparisons and tests; a wider one cannot be).
    pub fn or_detected(self) -> Isa {
        if self.available() {
            self
        } else {
            Isa::detected()
        }
    }

    /// Parses `avx512`, `avx2` or `generic`.
    pub fn parse(s: &str) -> Option<Isa> {
        match s {
            "avx512" => Some(Isa::Avx512),
            "avx2" => Some(Isa::Avx2),
            "generic" => Some(Isa::Generic),
            _ => None,
        }
    }
}

/// The CPU as its vendor names it, with the family and model numbers (x86: the CPUID brand
/// string, family and model as Linux reports them), for benchmark records; the architecture
/// elsewhere.
pub fn cpu_model() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        x86::cpu_model()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// Whether the CPU is Intel's (CPUID vendor `GenuineIntel`; read once): the kernels'
/// defaults differ between Intel's two full-width 512-bit FMA ports and AMD's double-pumped
/// 256-bit units.
pub fn is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static INTEL: OnceLock<bool> = OnceLock::new();
        *INTEL.get_or_init(x86::is_intel)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How many of `threads` worker threads share each L2 cache, by the CPUs this process may
/// run on (Linux: its affinity mask and `/sys/devices/system/cpu/cpuN/cache/index*/`): two
/// threads on one core's two hardware threads (SMT) share its L2, as on cloud VMs whose
/// vCPUs are hyperthread pairs. 1 where it cannot be read.
pub fn threads_per_l2(threads: usize) -> usize {
    let threads = threads.max(1);
    #[cfg(target_os = "linux")]
    if let Some(domains) = linux::l2_domains() {
        return threads.div_ceil(domains.max(1));
    }
    1
}

/// The CPU numbers of a Linux CPU list (`0-3,8,10-11`); None if it is not one.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                if b < a || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(target_os = "linux")]
pub(crate) mod linux {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The distinct L2 caches among the CPUs this process may run on (read once).
    pub fn l2_domains() -> Option<usize> {
        static DOMAINS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
        *DOMAINS
            .get_or_init(|| l2_domains_at(Path::new("/sys/devices/system/cpu"), &allowed_cpus()?))
    }

    /// The distinct L2 caches of `cpus` as described under `root` (sysfs' layout).
    pub fn l2_domains_at(root: &Path, cpus: &[usize]) -> Option<usize> {
        let mut domains = BTreeSet::new();
        for &cpu in cpus {
            domains.insert(l2_shared_with(root, cpu)?);
        }
        (!domains.is_empty()).then_some(domains.len())
    }

    /// The CPUs of this process's affinity mask.
    fn allowed_cpus() -> Option<Vec<usize>> {
        // Safety: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most
        // its size, and CPU_ISSET reads inside it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return None;
            }
            let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
            Some((0..max).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
        }
    }

    /// The CPUs that share `cpu`'s level-2 data (or unified) cache, as a sorted list.
    fn l2_shared_with(root: &Path, cpu: usize) -> Option<Vec<usize>> {
        for index in 0..8 {
            let dir = root.join(format!("cpu{cpu}/cache/index{index}"));
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
            let Some(level) = read("level") else { break };
            let kind = read("type").unwrap_or_default();
            if level.trim() == "2" && kind.trim() != "Instruction" {
                let mut cpus = super::parse_cpu_list(&read("shared_cpu_list")?)?;
                cpus.sort_unstable();
                return Some(cpus);
            }
        }
        None
    }
}

/// Runs `steps` rounds of 12 independent multiply-adds of `isa`'s vector width on this thread
/// and returns the floating-point operations done: timed over every thread at once it gives the
/// FMA peak the kernels are measured against (`bench --what gemm`).
pub fn fma_burst(isa: Isa, steps: usize) -> f64 {
    let lanes = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if isa.available() => {
            // Safety: the feature was detected at run time.
            std::hint::black_box(unsafe { x86::fma_burst_512(steps) });
            16
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa.available() => {
            // Safety: as above.
            std::hint::black_box(unsafe { x86::fma_burst_256(steps) });
            8
        }
        _ => {
            let (x, y) = (
                std::hint::black_box(0.999_999f32),
                std::hint::black_box(1e-6f32),
            );
            let mut r: [f32; 12] = std::array::from_fn(|i| std::hint::black_box(i as f32));
            for _ in 0..steps {
                for v in r.iter_mut() {
                    *v = v.mul_add(x, y);
                }
            }
            std::hint::black_box(r);
            1
        }
    };
    (steps * 12 * lanes * 2) as f64
}

/// Defines a function whose body is compiled three times (AVX-512, AVX2 + FMA, baseline) and
/// dispatched on the family the CPU runs, so plain element-wise loops vectorise beyond SSE2
/// without building the whole binary for one CPU.
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::native::simd::Isa::detected() {
                    // Safety: detected() only reports families the CPU supports.
                    $crate::native::simd::Isa::Avx512 => return unsafe { v4($($arg),*) },
                    $crate::native::simd::Isa::Avx2 => return unsafe { v3($($arg),*) },
                    $crate::native::simd::Isa::Generic => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Numerical Recipes' Chebyshev fit of `erfc`: `erfc(z) = t exp(-z^2 + P(t))`, `t = 1 / (1 +
/// z / 2)`, `P(t) = sum ERFC_FIT[i] t^i`, fractional error below 1.2e-7 for z >= 0.
pub const ERFC_FIT: [f32; 10] = [
    -1.265_512_2,
    1.000_023_7,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_204,
    1.488_515_9,
    -0.822_152_2,
    0.170_872_77,
];

/// `sqrt(2 / pi)`, GELU's tanh approximation's scale.
pub const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// GELU's tanh approximation (torch's `approximate='tanh'`): `x (1 + tanh(u)) / 2` with
/// `u = sqrt(2/pi) (x + 0.044715 x^3)`, computed as `x / (1 + e^(-2u))` (the same value) through
/// [`exp`].
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

/// Torch's `nn.GELU` (erf): `x (1 + erf(x / sqrt 2)) / 2`, in f32 through [`exp`] so loops of it
/// vectorise (the gemm epilogue has its own vector forms). `1 + erf` is taken as `erfc(|z|)`
/// for negative x, so the negative tail keeps its relative accuracy, and `2 - erfc(z)`
/// otherwise.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = ERFC_FIT[9];
    for &c in ERFC_FIT[..9].iter().rev() {
        p = p * t + c;
    }
    let erfc = t * exp(p - z * z);
    let one_plus_erf = if x >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * x * one_plus_erf
}

/// exp(x) as 2^n * e^f, n = round(x / ln 2), f reduced with a two-part ln 2 (Cody-Waite) and
/// e^f from its degree-7 Taylor polynomial (|f| <= 0.35); branch-free so loops vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest with the 1.5 * 2^23 trick (no libm call): t's low mantissa bits hold n.
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let f = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0
                        + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f * (1.0 / 5040.0)))))));
    // n read from t's bits, not by `n as i32`: Rust's saturating float-to-int cast does not
    // vectorise, and it turned every exp loop (GELU, softmax) into per-lane scalar code.
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let bits = ((ni + 127) << 23) as u32;
    p * f32::from_bits(bits)
}

const LOG2E: f32 = std::f32::consts::LOG2_E;

#[inline(always)]
pub fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let mut s: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    s += acc.iter().sum::<f32>();
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub fn is_intel() -> bool {
        let r = __cpuid(0);
        let mut v = Vec::with_capacity(12);
        for w in [r.ebx, r.edx, r.ecx] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v == b"GenuineIntel"
    }

    pub fn cpu_model() -> String {
        // The extended leaves are read only up to the maximum leaf 0x80000000 reports.
        let (brand, sig) = {
            let max_ext = __cpuid(0x8000_0000).eax;
            let mut bytes = Vec::new();
            if max_ext >= 0x8000_0004 {
                for leaf in 0x8000_0002..=0x8000_0004u32 {
                    let r = __cpuid(leaf);
                    for w in [r.eax, r.ebx, r.ecx, r.edx] {
                        bytes.extend_from_slice(&w.to_le_bytes());
                    }
                }
            }
            (bytes, __cpuid(1).eax)
        };
        let brand = String::from_utf8_lossy(&brand)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string();
        let (base_family, ext_family) = ((sig >> 8) & 0xf, (sig >> 20) & 0xff);
        let family = if base_family == 0xf {
            base_family + ext_family
        } else {
            base_family
        };
        let mut model = (sig >> 4) & 0xf;
        if base_family == 0x6 || base_family == 0xf {
            model |= ((sig >> 16) & 0xf) << 4;
        }
        let brand = if brand.is_empty() {
            "x86_64".into()
        } else {
            brand
        };
        format!("{brand}, family {family} model {model}")
    }

    /// `steps` rounds of 12 independent multiply-adds on 16 lanes; returns a value that
    /// depends on all of them (so none is optimised away).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_burst_512(steps: usize) -> f32 {
        // Inputs the compiler cannot see, so the chains are neither folded nor merged.
        let x = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm512_set1_ps(std::hint::black_box(1e-6));
        let mut r: [__m512; 12] =
            std::array::from_fn(|i| _mm512_set1_ps(std::hint::black_box(i as f32)));
        for _ in 0..steps {
            for v in r.iter_mut() {
                *v = _mm512_fmadd_ps(*v, x, y);
            }
        }
        let s = r
            .iter()
            .fold(_mm512_setzero_ps(), |a, &v| _mm512_add_ps(a, v));
        _mm512_reduce_add_ps(s)
    }

    /// The AVX2 form of [`fma_burst_512`] (8 lanes).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_burst_256(steps: usize) -> f32 {
        // Inputs the compiler cannot see, so the chains are neither folded nor merged.
        let x = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm256_set1_ps(std::hint::black_box(1e-6));
        let mut r: [__m256; 12] =
            std::array::from_fn(|i| _mm256_set1_ps(std::hint::black_box(i as f32)));
        for _ in 0..steps {
            for v in r.iter_mut() {
                *v = _mm256_fmadd_ps(*v, x, y);
            }
        }
        let s = r
            .iter()
            .fold(_mm256_setzero_ps(), |a, &v| _mm256_add_ps(a, v));
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_linux_writes_them() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        // Two hyperthreads on one L2, and two cores with one each, as sysfs lays them out.
        #[cfg(target_os = "linux")]
        {
            let dir = tempfile::tempdir().unwrap();
            let cache = |cpu: usize, index: usize, level: &str, kind: &str, shared: &str| {
                let d = dir.path().join(format!("cpu{cpu}/cache/index{index}"));
                std::fs::create_dir_all(&d).unwrap();
                for (f, v) in [
                    ("level", level),
                    ("type", kind),
                    ("shared_cpu_list", shared),
                ] {
                    std::fs::write(d.join(f), format!("{v}\n")).unwrap();
                }
            };
            for cpu in 0..4 {
                let pair = if cpu < 2 { "0-1" } else { "2-3" };
                cache(cpu, 0, "1", "Data", pair);
                cache(cpu, 1, "1", "Instruction", pair);
                cache(cpu, 2, "2", "Unified", pair);
                cache(cpu, 3, "3", "Unified", "0-3");
            }
            let at = |cpus: &[usize]| linux::l2_domains_at(dir.path(), cpus);
            assert_eq!(at(&[0, 1]), Some(1));
            assert_eq!(at(&[0, 2]), Some(2));
            assert_eq!(at(&[0, 1, 2, 3]), Some(2));
            assert_eq!(at(&[7]), None);
        }
        // Whatever this machine is, the answer is a share of the threads.
        let t = threads_per_l2(2);
        assert!((1..=2).contains(&t), "{t}");
        assert_eq!(threads_per_l2(1), 1);
    }

    #[test]
    fn fma_burst_counts_its_operations() {
        for (isa, lanes) in [(Isa::Avx512, 16), (Isa::Avx2, 8), (Isa::Generic, 1)] {
            let want = if isa.available() { lanes } else { 1 };
            assert_eq!(fma_burst(isa, 10), (10 * 12 * want * 2) as f64, "{isa:?}");
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.01;
        }
        assert!(worst < 5e-7, "{worst}");
    }
}

/// Test references in f64, computed independently of the kernels' fits.
#[cfg(test)]
pub(crate) mod reference {
    /// `1 + erf(z)`: erfc's continued fraction for |z| > 2.5 (no cancellation in the negative
    /// tail), erf's Maclaurin series otherwise.
    pub fn one_plus_erf(z: f64) -> f64 {
        fn erfc(a: f64) -> f64 {
            let mut f = a;
            for k in (1..200).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        }
        if z < -2.5 {
            return erfc(-z);
        }
        if z > 2.5 {
            return 2.0 - erfc(z);
        }
        let (mut term, mut sum) = (z, z);
        for n in 1..80 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        1.0 + sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// GELU (erf) in f64.
    pub fn gelu(x: f64) -> f64 {
        0.5 * x * one_plus_erf(x / std::f64::consts::SQRT_2)
    }
}
