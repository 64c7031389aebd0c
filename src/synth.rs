//! Synthetic inputs for benchmarks, tests and GPU checks: random weights for any architecture
//! (keys as in released checkpoints, plausible scales, BatchNorm variances positive) and
//! photo-like JPEGs. One generator, seeded, reproducible.

use crate::models::{Config, PyramidClip};
use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A VarBuilder backend that makes plausible random weights and remembers them.
struct RandomWeights {
    made: Mutex<BTreeMap<String, Tensor>>,
    seed: u64,
}

fn rng_next(state: &mut u64) -> f32 {
    // xorshift64*: reproducible, dependency-free.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
    ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        _dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let n = s.elem_count();
        let mut st = self.seed
            ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
        st |= 1;
        let fan_in = if s.dims().len() >= 2 {
            s.dims()[1..].iter().product::<usize>()
        } else {
            1
        };
        let scale = 1.0 / (fan_in as f32).sqrt();
        let vals: Vec<f32> = if name.ends_with("running_var") {
            (0..n)
                .map(|_| 1.0 + 0.5 * rng_next(&mut st).abs())
                .collect()
        } else if name.ends_with("running_mean")
            || name.ends_with(".bias")
            || name.ends_with("in_proj_bias")
        {
            (0..n).map(|_| 0.02 * rng_next(&mut st)).collect()
        } else if name.contains("ln_")
            || name.ends_with("bn.weight")
            || name.contains(".bn") && name.ends_with("weight")
        {
            (0..n).map(|_| 1.0 + 0.1 * rng_next(&mut st)).collect()
        } else {
            (0..n).map(|_| scale * rng_next(&mut st)).collect()
        };
        let t = Tensor::from_vec(vals, s, &Device::Cpu)?;
        self.made
            .lock()
            .unwrap()
            .insert(name.to_string(), t.clone());
        t.to_device(dev)
    }
    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for {name}")
    }
    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A full state dict of random weights for `cfg` (keys as in released checkpoints; a CoCa's
/// captioning decoder included).
pub fn random_state_dict(cfg: &Config, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let backend = RandomWeights {
        made: Mutex::new(BTreeMap::new()),
        seed,
    };
    let rw = std::sync::Arc::new(backend);
    let vb = VarBuilder::from_backend(
        Box::new(crate::checkpoint::Shared(rw.clone())),
        DType::F32,
        Device::Cpu,
    );
    PyramidClip::new(cfg, vb.clone())?;
    if cfg.coca_decoder.is_some() {
        // CoCa's captioning decoder too, so that `captioning` runs on the checkpoint.
        crate::models::coca::TextDecoder::new(cfg, vb.pp("text_decoder"))?;
    }
    let mut out: Vec<(String, Tensor)> = rw
        .made
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.push((
        "logit_scale".into(),
        Tensor::new(&[4.6052f32], &Device::Cpu)?.reshape(())?,
    ));
    Ok(out)
}

/// A VarBuilder of random weights (`seed`) for any architecture, in `dtype` on `device`.
pub fn random_weights(seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    let backend = RandomWeights {
        made: Mutex::new(BTreeMap::new()),
        seed,
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

/// [`random_weights`] in f32 on the CPU (unit tests).
pub fn random_vb(seed: u64) -> VarBuilder<'static> {
    random_weights(seed, DType::F32, &Device::Cpu)
}

/// Synthetic photo-like JPEGs (smooth gradients plus noise), 500x375, 4:2:0, quality 90.
pub fn synthetic_jpegs(count: usize) -> std::io::Result<Vec<Vec<u8>>> {
    let (w, h) = (500usize, 375usize);
    let mut out = Vec::new();
    let mut st = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..count {
        let mut px = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let n = rng_next(&mut st) * 12.0;
                let v = [
                    (x as f32 * 0.4 + i as f32 * 30.0 + n) as i32,
                    (y as f32 * 0.6 + n) as i32,
                    ((x + y) as f32 * 0.3 + 60.0 + n) as i32,
                ];
                for c in 0..3 {
                    px[(y * w + x) * 3 + c] = v[c].rem_euclid(256) as u8;
                }
            }
        }
        let bytes = std::panic::catch_unwind(|| -> std::io::Result<Vec<u8>> {
            let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
            // Baseline (not progressive) like most camera and ImageNet files.
            comp.set_fastest_defaults();
            comp.set_size(w, h);
            comp.set_quality(90.0);
            let mut started = comp.start_compress(Vec::new())?;
            started.write_scanlines(&px)?;
            started.finish()
        })
        .map_err(|_| std::io::Error::other("the JPEG encoder failed"))??;
        out.push(bytes);
    }
    Ok(out)
}
