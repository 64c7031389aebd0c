//! The data a run reads: label sets (`labels`: class names and prompt templates, built in or
//! from files), image folders (`image_folder`: torchvision's ImageFolder layout) and the
//! streaming loader that decodes batches on worker threads (`loader`), and captioned image
//! sets for retrieval (`captions`).

pub mod captions;
pub mod image_folder;
pub mod labels;
pub mod loader;

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
    pub path: PathBuf,
    pub label: usize,
}
