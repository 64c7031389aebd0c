//! The data a run reads: label sets (`labels`: class names and prompt templates, built in or
//! from files), image folders (`image_folder`: torchvision's ImageFolder layout), webdataset
//! shards (`wds`), the linear probe's labelled splits in either layout (`labelled`), the
//! streaming loader that decodes batches on worker threads (`loader`), captioned image sets
//! for retrieval (`captions`) and torchvision's downloads of CIFAR (`cifar`) and of the
//! datasets whose splits are list files (`listed`: Food-101, DTD, Pets, Aircraft, Flowers102,
//! Cars, SUN397, Caltech101, ObjectNet; its MATLAB files read by `mat`).

pub mod captions;
pub mod cifar;
pub mod image_folder;
pub mod labelled;
pub mod labels;
pub mod listed;
pub mod loader;
pub mod mat;
pub mod wds;

pub use image_folder::{list, list_for, resolve_root, ImageFolder};
pub use labels::{fill, lines};
pub use loader::{stream, Batch};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {msg}")]
    Path { path: PathBuf, msg: String },
    #[error("{0}")]
    Labels(String),
    #[error(transparent)]
    Image(#[from] crate::preprocess::Error),
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// The file, or for a tar member `SHARD.tar/KEY.EXT` (what outputs name).
    pub path: PathBuf,
    pub label: usize,
    /// Where the bytes are inside a webdataset shard.
    pub member: Option<wds::Member>,
}

impl Sample {
    pub fn file(path: PathBuf, label: usize) -> Self {
        Self {
            path,
            label,
            member: None,
        }
    }

    /// Reads, decodes and crops the image: `[3, n, n]` 8-bit levels.
    pub fn crop(&self, n: usize) -> Result<Vec<u8>, crate::preprocess::Error> {
        match &self.member {
            None => crate::preprocess::crop_u8(&self.path, n),
            Some(m) => {
                let err = |msg: String| crate::preprocess::Error {
                    path: self.path.clone(),
                    msg,
                };
                let bytes = m.read().map_err(|e| err(e.to_string()))?;
                if let Some((w, h)) = m.pixels {
                    return Ok(crate::preprocess::crop_u8_from_planes(
                        &bytes, w as usize, h as usize, n,
                    ));
                }
                crate::preprocess::crop_u8_from_bytes(&bytes, n).map_err(|e| err(e.0))
            }
        }
    }
}
