//! Architecture configurations in the upstream `models/model_config.yml` format.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model config `{name}`: {msg}")]
    Invalid { name: String, msg: String },
    #[error("cannot read model config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model config {path} is malformed: {msg}")]
    Malformed { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    InFile { path: PathBuf, source: Box<Error> },
    #[error("unknown model `{name}`{hint}; known: {known}; add others with --model-config")]
    Unknown {
        name: String,
        hint: String,
        known: String,
    },
}

/// `vision_layers` is a list for ResNets and a number for ViTs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VisionLayers {
    Vit(usize),
    ResNet(Vec<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub embed_dim: usize,
    pub image_resolution: usize,
    pub vision_layers: VisionLayers,
    pub vision_width: usize,
    pub vision_patch_size: Option<usize>,
    pub context_length: usize,
    pub vocab_size: usize,
    pub transformer_width: usize,
    pub transformer_heads: usize,
    pub transformer_layers: usize,
}

impl Config {
    pub fn is_vit(&self) -> bool {
        matches!(self.vision_layers, VisionLayers::Vit(_))
    }

    /// Vision heads as upstream derives them.
    pub fn vision_heads(&self) -> usize {
        if self.is_vit() {
            (self.vision_width / 64).max(1)
        } else {
            (self.vision_width * 32 / 64).max(1)
        }
    }

    /// Checks the sizes the model code relies on.
    pub fn validate(&self, name: &str) -> Result<(), Error> {
        let bad = |msg: String| {
            Err(Error::Invalid {
                name: name.to_string(),
                msg,
            })
        };
        if self.transformer_heads == 0
            || !self
                .transformer_width
                .is_multiple_of(self.transformer_heads)
        {
            return bad("transformer_width must be a multiple of transformer_heads".into());
        }
        if self.embed_dim == 0 || self.context_length == 0 || self.vocab_size == 0 {
            return bad("embed_dim, context_length and vocab_size must be positive".into());
        }
        match (&self.vision_layers, self.vision_patch_size) {
            (VisionLayers::Vit(_), Some(p)) => {
                if p == 0 || !self.image_resolution.is_multiple_of(p) {
                    return bad("image_resolution must be a multiple of vision_patch_size".into());
                }
                if !self.vision_width.is_multiple_of(self.vision_heads()) {
                    return bad("vision_width must be a multiple of the vision heads".into());
                }
            }
            (VisionLayers::Vit(_), None) => return bad("a ViT needs vision_patch_size".into()),
            (VisionLayers::ResNet(l), _) => {
                if l.len() != 4
                    || !self.image_resolution.is_multiple_of(32)
                    || self.vision_width < 2
                {
                    return bad(
                        "a ResNet needs 4 stage depths and a resolution divisible by 32".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Named architectures: the built-in presets plus any `--model-config` file.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub configs: BTreeMap<String, Config>,
}

const BUILTIN: &str = include_str!("../../configs/model_config.yml");

impl Registry {
    pub fn builtin() -> Self {
        let configs = serde_yaml::from_str(BUILTIN).expect("built-in model_config.yml is valid");
        Self { configs }
    }

    /// Built-in presets, with the entries of `file` (if any) added or overriding by name.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let mut reg = Self::builtin();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let extra: BTreeMap<String, Config> =
                serde_yaml::from_str(&text).map_err(|e| Error::Malformed {
                    path: path.to_path_buf(),
                    msg: e.to_string(),
                })?;
            for (name, cfg) in &extra {
                cfg.validate(name).map_err(|e| Error::InFile {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?;
            }
            reg.configs.extend(extra);
        }
        Ok(reg)
    }

    pub fn get(&self, name: &str) -> Result<&Config, Error> {
        self.configs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.configs.keys().map(String::as_str).collect();
            let hint = crate::util::nearest(name, &known)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            Error::Unknown {
                name: name.to_string(),
                hint,
                known: known.join(", "),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_validate() {
        let r = Registry::builtin();
        assert_eq!(r.configs.len(), 9);
        for (n, c) in &r.configs {
            c.validate(n).unwrap();
        }
        let b16 = r.get("ViT-B-16").unwrap();
        assert_eq!(b16.vision_patch_size, Some(16));
        assert_eq!(
            r.get("RN50").unwrap().vision_layers,
            VisionLayers::ResNet(vec![3, 4, 6, 3])
        );
        assert!(r.get("RN5O").unwrap_err().to_string().contains("RN50"));
    }
}
