//! Device selection (`--device`) and the compute precision (`--precision`).

use candle_core::Device;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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

/// What `--device` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first GPU when the binary has CUDA and one is present, else the CPU.
    Auto,
    Cpu,
    /// A GPU; `None`: the launcher's LOCAL_RANK, else 0.
    Cuda(Option<usize>),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(None)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| Self::Cuda(Some(n)))
                .ok_or_else(|| "expected auto, cpu, cuda or cuda:N".to_string()),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(None) => write!(f, "cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

/// Opens the device; `local_rank` (from a launcher) picks the GPU for `auto` and `cuda`.
pub fn select(spec: DeviceSpec, local_rank: Option<usize>) -> Result<Device, Error> {
    let ordinal = match spec {
        DeviceSpec::Cpu => return Ok(Device::Cpu),
        DeviceSpec::Auto => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(local_rank.unwrap_or(0)) {
                    return Ok(d);
                }
            }
            return Ok(Device::Cpu);
        }
        DeviceSpec::Cuda(n) => n.or(local_rank).unwrap_or(0),
    };
    let spec = spec.to_string();
    if !candle_core::utils::cuda_is_available() {
        return Err(Error::NoCuda { spec });
    }
    // candle appends a backtrace to some errors: keep the message's first line.
    Device::new_cuda(ordinal).map_err(|e| Error::Cuda {
        spec,
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
