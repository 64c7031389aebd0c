//! Device selection and compute precision.

use candle_core::{DType, Device};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--device {0}: expected auto, cpu, cuda or cuda:N")]
    BadSpec(String),
    #[error("--device {spec}: this binary was built without CUDA support (rebuild with `--features cuda`, see scripts/build-cuda.sh)")]
    NoCuda { spec: String },
    #[error("--device {spec}: cannot open the GPU: {msg}")]
    Cuda { spec: String, msg: String },
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
    Amp,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Amp => "amp",
        }
    }
}

/// `auto` picks the first GPU when the binary has CUDA and one is present, else the CPU.
/// `local_rank` (from a launcher) picks the GPU for `auto` and `cuda`.
pub fn select(spec: &str, local_rank: Option<usize>) -> Result<Device, Error> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(local_rank.unwrap_or(0)) {
                    return Ok(d);
                }
            }
            return Ok(Device::Cpu);
        }
        "cuda" => local_rank.unwrap_or(0),
        s => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Err(Error::BadSpec(s.into())),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::NoCuda { spec: spec.into() });
    }
    // candle appends a backtrace to some errors: keep the message's first line.
    Device::new_cuda(ordinal).map_err(|e| Error::Cuda {
        spec: spec.into(),
        msg: e.to_string().lines().next().unwrap_or_default().to_string(),
    })
}

pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => format!("cuda:{}", device.location_ordinal()),
        _ => format!("{:?}", device.location()),
    }
}

trait Ordinal {
    fn location_ordinal(&self) -> usize;
}

impl Ordinal for Device {
    fn location_ordinal(&self) -> usize {
        match self.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => gpu_id,
            _ => 0,
        }
    }
}

/// The dtype the encoders run in. Reduced precision is a GPU feature here: on the CPU it
/// falls back to fp32 with a warning (candle's CPU kernels have no fast fp16 path).
/// `amp` computes in fp16 with LayerNorm, softmax and the final normalisation in fp32.
pub fn compute_dtype(p: Precision, device: &Device) -> (DType, Option<String>) {
    let want = match p {
        Precision::Fp32 => DType::F32,
        Precision::Fp16 | Precision::Amp => DType::F16,
        Precision::Bf16 => DType::BF16,
    };
    if want != DType::F32 && device.is_cpu() {
        return (
            DType::F32,
            Some(format!(
                "--precision {} is not supported on the CPU; computing in fp32",
                p.name()
            )),
        );
    }
    (want, None)
}
